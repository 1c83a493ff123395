"""Compile a RASP program with tracr and convert it to the engine's ``ModelSpec`` (TransformerLens layout).

tracr's assembled model is a residual transformer without LayerNorm, with ReLU MLPs, bidirectional
attention scaled by 1/sqrt(key_size) and zero biases; its residual stream has one named dimension
per feature (``residual_labels``: ``tokens:x``, ``indices:3``, ``one``, ``<sop>:<value>`` for a
categorical value, ``<sop>`` for a numerical one). The conversion copies every weight unchanged
(float32, as tracr holds them) into a model of the same shape (TransformerLens weight names); the unembedding is tracr's
own: the projection of the residual stream onto the program's output dimensions. So the converted
model's "logits" are the output space itself:

  categorical program: ``d_vocab_out`` = the number of output values; logit j is the residual's
      ``<sop>:<value j>`` coordinate (1 for the output value, 0 for the others), and the decoded
      output is the argmax (as tracr decodes it);
  numerical program: ``d_vocab_out`` = 1; the single "logit" is the output value itself.

Position 0 holds BOS; its output is meaningless (tracr decodes it as BOS). ``compile_program``
checks the converted model against tracr's own forward pass on every input the program accepts
(``TracrProgram.all_inputs``) and raises if any decoded output differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from acdc_engine.core.errors import AcdcError
from acdc_engine.tracr.programs import COMPILER_BOS, COMPILER_PAD, MLP_EXACTNESS, TracrProgram

INSTALL_HINT = "pip install 'acdc-engine[tracr]'"
NUMERICAL_TOLERANCE = 1e-5  # numerical outputs: largest |converted - tracr| accepted (float32 sums in another order)


def require_tracr() -> None:
    """AcdcError saying how to install tracr when it is missing."""
    import importlib.util

    if importlib.util.find_spec("tracr") is None:
        raise AcdcError(f"tracr models need the tracr compiler (package tracr-pypi), which is not installed: {INSTALL_HINT}")


@dataclass
class CompiledProgram:
    """A tracr-compiled program converted to TransformerLens weights.

    name: the program's name (``PROGRAMS``).
    config: HookedTransformerConfig field names (``acdc_engine.architecture.from_tl_weights``).
    weights: the state dict, float32, TransformerLens parameter names.
    residual_labels: tracr's name of each residual dimension, [d_model].
    input_encoding: input value (and BOS, PAD) -> token id.
    output_values: a categorical program's output value of each logit, [d_vocab_out]; None for a
        numerical program (one output: the value).
    provenance: tracr version, compiler settings, and the check against tracr (inputs compared,
        largest output difference).
    """

    name: str
    config: dict[str, Any]
    weights: dict[str, Tensor]
    residual_labels: list[str]
    input_encoding: dict[Any, int]
    output_values: list[Any] | None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def categorical(self) -> bool:
        return self.output_values is not None

    def model(self, device: str = "cpu", dtype: torch.dtype = torch.float32):
        """A fresh ``ModelSpec`` in eval mode holding the compiled weights."""
        from acdc_engine.architecture import from_tl_weights

        model = from_tl_weights(self.config, self.weights).to(device)
        return (model if dtype == torch.float32 else model.to(dtype)).eval()

    def encode(self, inputs: Sequence[Sequence[Any]]) -> Tensor:
        """Token ids [n, 1 + length] of equally long inputs (values from the vocabulary), BOS prepended."""
        bos = self.input_encoding[COMPILER_BOS]
        try:
            return torch.tensor([[bos] + [self.input_encoding[value] for value in values] for values in inputs])
        except KeyError as error:
            vocab = [value for value in self.input_encoding if value not in (COMPILER_BOS, COMPILER_PAD)]
            raise AcdcError(f"'{error.args[0]}' is not in the vocabulary of '{self.name}': {vocab}") from None

    def decode(self, outputs: Tensor) -> list[list[Any]]:
        """Outputs [n, pos, d_vocab_out] -> per input, the decoded value at each position after BOS
        (a categorical program's argmax value, a numerical program's float)."""
        if self.categorical:
            return [[self.output_values[i] for i in row] for row in outputs[:, 1:].argmax(-1).tolist()]
        return outputs[:, 1:, 0].tolist()


def compile_program(program: TracrProgram) -> CompiledProgram:
    """Compile ``program`` with tracr (seconds), convert it, and check it against tracr on every input."""
    sop, assembled = tracr_compile(program)
    compiled = convert(program, sop, assembled)
    compiled.provenance["check_against_tracr"] = check_against_tracr(program, assembled, compiled)
    return compiled


def tracr_compile(program: TracrProgram) -> tuple[Any, Any]:
    """(the RASP program, tracr's ``AssembledTransformerModel``) of ``program``."""
    require_tracr()
    from tracr.compiler import compiling

    sop = program.build()
    assembled = compiling.compile_rasp_to_model(
        sop,
        vocab=set(program.vocab),
        max_seq_len=program.max_seq_len,
        compiler_bos=COMPILER_BOS,
        compiler_pad=COMPILER_PAD,
        mlp_exactness=MLP_EXACTNESS,
    )
    return sop, assembled


def _float32(array: Any) -> Tensor:
    """A float32 tensor of a tracr (numpy or jax) array."""
    return torch.tensor(np.asarray(array, dtype=np.float32))


def _unembedding(sop: Any, assembled: Any, labels: list[str]) -> tuple[list[Any] | None, np.ndarray]:
    """(output values, W_U): a categorical program's output value of each logit, in the order of
    tracr's output encoding (None for a numerical program), and the float32 [d_model, d_vocab_out]
    projection of the residual stream (dimensions named by ``labels``) onto the output dimensions."""
    from tracr.craft import bases
    from tracr.rasp import rasp

    if rasp.is_categorical(sop):
        encoding = assembled.output_encoder.encoding_map
        output_values = sorted(encoding, key=encoding.__getitem__)
        output_labels = [str(bases.BasisDirection(sop.label, value)) for value in output_values]
    else:
        output_values = None
        output_labels = [str(bases.BasisDirection(sop.label))]
    unembed = np.zeros((len(labels), len(output_labels)), dtype=np.float32)
    for j, label in enumerate(output_labels):
        unembed[labels.index(label), j] = 1.0
    return output_values, unembed


def _layer_weights(params: Any, layer: int, n_heads: int, d_head: int, d_model: int) -> dict[str, Tensor]:
    """Layer ``layer``'s weights from tracr's ``params``, float32, under TransformerLens names:
    W_Q, W_K, W_V [n_heads, d_model, d_head]; b_Q, b_K, b_V [n_heads, d_head]; W_O [n_heads, d_head,
    d_model]; b_O [d_model]; W_in [d_model, d_mlp]; b_in [d_mlp]; W_out [d_mlp, d_model]; b_out [d_model]."""
    attn, mlp = f"transformer/layer_{layer}/attn", f"transformer/layer_{layer}/mlp"
    weights = {}
    for tl_name, tracr_name in (("Q", "query"), ("K", "key"), ("V", "value")):
        w = _float32(params[f"{attn}/{tracr_name}"]["w"])  # [d_model, n_heads * d_head]
        weights[f"blocks.{layer}.attn.W_{tl_name}"] = w.reshape(d_model, n_heads, d_head).permute(1, 0, 2).contiguous()
        weights[f"blocks.{layer}.attn.b_{tl_name}"] = _float32(params[f"{attn}/{tracr_name}"]["b"]).reshape(n_heads, d_head)
    weights[f"blocks.{layer}.attn.W_O"] = _float32(params[f"{attn}/linear"]["w"]).reshape(n_heads, d_head, d_model)
    weights[f"blocks.{layer}.attn.b_O"] = _float32(params[f"{attn}/linear"]["b"])
    weights[f"blocks.{layer}.mlp.W_in"] = _float32(params[f"{mlp}/linear_1"]["w"])
    weights[f"blocks.{layer}.mlp.b_in"] = _float32(params[f"{mlp}/linear_1"]["b"])
    weights[f"blocks.{layer}.mlp.W_out"] = _float32(params[f"{mlp}/linear_2"]["w"])
    weights[f"blocks.{layer}.mlp.b_out"] = _float32(params[f"{mlp}/linear_2"]["b"])
    return weights


def _tl_config(name: str, cfg: Any, d_model: int, d_vocab: int, d_vocab_out: int, n_ctx: int) -> dict[str, Any]:
    """HookedTransformerConfig fields of tracr's model config ``cfg``: no LayerNorm, ReLU MLPs."""
    return {
        "model_name": name,
        "n_layers": cfg.num_layers,
        "n_heads": cfg.num_heads,
        "d_model": d_model,
        "d_head": cfg.key_size,
        "d_mlp": cfg.mlp_hidden_size,
        "d_vocab": d_vocab,
        "d_vocab_out": d_vocab_out,
        "n_ctx": n_ctx,
        "act_fn": "relu",
        "normalization_type": None,
        "attention_dir": "causal" if cfg.causal else "bidirectional",
        "attn_only": False,
    }


def _compiler_settings(program: TracrProgram) -> dict[str, Any]:
    """The settings ``tracr_compile`` compiled ``program`` with (the start of its provenance)."""
    return {
        "vocab": list(program.vocab),
        "max_seq_len": program.max_seq_len,
        "compiler_bos": COMPILER_BOS,
        "compiler_pad": COMPILER_PAD,
        "mlp_exactness": MLP_EXACTNESS,
    }


def convert(program: TracrProgram, sop: Any, assembled: Any) -> CompiledProgram:
    """tracr's assembled model of ``program`` (RASP program ``sop``) as TransformerLens weights."""
    cfg, params = assembled.model_config, assembled.params
    labels = list(assembled.residual_labels)
    d_model = len(labels)
    output_values, unembed = _unembedding(sop, assembled, labels)
    weights = {
        "embed.W_E": _float32(params["token_embed"]["embeddings"]),  # [d_vocab, d_model]
        "pos_embed.W_pos": _float32(params["pos_embed"]["embeddings"]),  # [n_ctx, d_model]
        "unembed.W_U": torch.from_numpy(unembed),
        "unembed.b_U": torch.zeros(unembed.shape[1]),
    }
    for layer in range(cfg.num_layers):
        weights.update(_layer_weights(params, layer, cfg.num_heads, cfg.key_size, d_model))
    config = _tl_config(
        program.name, cfg, d_model,
        d_vocab=weights["embed.W_E"].shape[0], d_vocab_out=unembed.shape[1], n_ctx=weights["pos_embed.W_pos"].shape[0],
    )
    return CompiledProgram(
        name=program.name,
        config=config,
        weights=weights,
        residual_labels=labels,
        input_encoding=dict(assembled.input_encoder.encoding_map),
        output_values=output_values,
        provenance=_compiler_settings(program),
    )


def check_against_tracr(program: TracrProgram, assembled: Any, compiled: CompiledProgram) -> dict[str, Any]:
    """Run tracr's model and the converted one (float32) on every input the program accepts;
    AcdcError naming the first input whose decoded output differs. Returns the number of inputs
    compared and, for a numerical program, the largest |difference| of the outputs."""
    import jax
    import jax.numpy as jnp

    model = compiled.model()
    tracr_forward = jax.jit(lambda tokens: assembled.forward(assembled.params, tokens).unembedded_output)
    n_inputs, largest = 0, 0.0
    for length in range(1, program.max_seq_len + 1):
        inputs = list(program.inputs(length))
        tokens = compiled.encode(inputs)
        tracr_out = np.asarray(tracr_forward(jnp.asarray(tokens.numpy())))
        with torch.no_grad():
            outputs = model(tokens)
        if compiled.categorical:
            ours = outputs[:, 1:].argmax(-1).numpy()
            differ = ours != tracr_out[:, 1:]
        else:
            difference = np.abs(outputs[:, 1:, 0].double().numpy() - tracr_out[:, 1:])
            largest = max(largest, float(difference.max()))
            differ = difference > NUMERICAL_TOLERANCE
        if differ.any():
            bad = inputs[int(np.nonzero(differ.any(-1))[0][0])]
            raise AcdcError(f"the converted '{program.name}' differs from tracr's model on input {list(bad)}")
        n_inputs += len(inputs)
    result: dict[str, Any] = {"inputs": n_inputs, "decoded_outputs_equal": True}
    if not compiled.categorical:
        result["largest_output_difference"] = largest
    return result
