"""Train the built-in model `toy-predecessor-2l` for task `predecessor` and write its weights into the package.

What it does
------------
Trains a 2-layer TransformerLens `HookedTransformer` with MLPs (4 heads per layer, d_model=64,
d_head=16, d_mlp=256, GELU, LayerNorm, learned positional embeddings, n_ctx=22, vocab 64) on the
task's own prompts (``acdc_engine.tasks.predecessor``):

    BOS t_1 .. t_m q      with q = t_j (j random in 2..m), target t_{j-1}

drawn fresh every step from a seeded ``torch.Generator``, with m uniform in 4..20 (one m per
batch) so that the model cannot key on one prompt length. The loss is the cross-entropy of the
target at the last position only (no other position has a determined next token); final_loss is
its mean over the last 100 training steps.

The expected circuit (see the task's docstring for why a 2-layer model has no other way than
V-composition): layer-0 heads copy t_{j-1} forward, and layer-1 heads at the query find where it
was copied to and read it through their value input. The run with seed 0 learns the variant the
task's docstring describes: a previous-token head and a two-back head in layer 0 both write into
position j+1; the layer-1 heads attend from the query to j+1 (K-composition with the
previous-token head) and read t_{j-1} there (V-composition with the two-back head).

At the end the script evaluates on 500 held-out prompts in the task's default format (m = 12) and
prints the top-1 accuracy at the query and, per head, the previous-token and two-back scores
(layer 0: mean attention i -> i-1 and i -> i-2 over every position i) and the lookup score
(layer 1: mean attention from the query to position j+1, just after the query token's earlier
occurrence). It writes (overwriting)
``acdc_engine/models/weights/toy-predecessor-2l.{safetensors,json}`` and checks that a model
rebuilt from those files (strict loading) gives the same logits.

How to run (from the repository root; one CPU thread, see the JSON file for the time it took)
----------------------------------------------------------------------------------------------
    HF_HUB_OFFLINE=1 python experiments/train_toy_predecessor.py [--seed 0]

The run is deterministic given --seed (bitwise, on the same machine and torch build).
"""

import argparse
import time

import torch
import torch.nn.functional as F
from transformer_lens import HookedTransformer

from acdc_engine.tasks.predecessor import predecessor_prompts
from training import deterministic_model, save_shipped, train

# -----------------------------------------------------------------------------
# settings
NAME = "toy-predecessor-2l"
BOS = 0
D_VOCAB = 64
MIN_LENGTH, MAX_LENGTH = 4, 20  # prompt body length m in training data
N_CTX = MAX_LENGTH + 2  # BOS + body + query
STEPS = 4000
BATCH_SIZE = 128
LR = 1e-3
WEIGHT_DECAY = 0.01
WARMUP = 100
THREADS = 1
N_EVAL = 500
EVAL_LENGTH = 12  # the task's default
ORDINARY = torch.arange(1, D_VOCAB)  # every token but BOS
# -----------------------------------------------------------------------------


def model_config(seed: int) -> dict:
    """Exactly the keyword arguments of HookedTransformerConfig for this model."""
    return dict(
        n_layers=2,
        n_heads=4,
        d_model=64,
        d_head=16,
        d_mlp=256,
        n_ctx=N_CTX,
        d_vocab=D_VOCAB,
        attn_only=False,
        act_fn="gelu",
        normalization_type="LN",
        positional_embedding_type="standard",
        seed=seed,
    )


def query_loss(model: HookedTransformer, gen: torch.Generator) -> torch.Tensor:
    """Cross-entropy of the predecessor at the query, on one fresh batch of random length."""
    length = int(torch.randint(MIN_LENGTH, MAX_LENGTH + 1, (1,), generator=gen))
    tokens, answers, _ = predecessor_prompts(BATCH_SIZE, length, ORDINARY, BOS, gen)
    return F.cross_entropy(model(tokens)[:, -1], answers)


@torch.no_grad()
def evaluate(model: HookedTransformer, gen: torch.Generator) -> dict:
    tokens, answers, earlier = predecessor_prompts(N_EVAL, EVAL_LENGTH, ORDINARY, BOS, gen)
    logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"))
    accuracy = (logits[:, -1].argmax(-1) == answers).float().mean().item()
    pattern0 = cache["blocks.0.attn.hook_pattern"]  # [batch, head, query, key]
    pattern1 = cache["blocks.1.attn.hook_pattern"]
    return dict(
        accuracy=accuracy,
        prev_token_scores=offset_scores(pattern0, 1),
        two_back_scores=offset_scores(pattern0, 2),
        lookup_scores=pattern1[torch.arange(N_EVAL), :, -1, earlier + 1].mean(0).tolist(),
    )


def offset_scores(pattern: torch.Tensor, offset: int) -> list[float]:
    """Per head, the mean attention from position i to i - offset over every i >= offset."""
    queries = torch.arange(offset, pattern.shape[-1])
    return pattern[:, :, queries, queries - offset].mean(dim=(0, 2)).tolist()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    t0 = time.time()
    config = model_config(args.seed)
    model = deterministic_model(config, args.seed, THREADS)
    final_loss = train(model, query_loss, steps=STEPS, lr=LR, weight_decay=WEIGHT_DECAY, warmup=WARMUP, seed=args.seed)
    res = evaluate(model, torch.Generator().manual_seed(args.seed + 1_000_003))  # held out from the training stream
    seconds = time.time() - t0

    print(f"\npredecessor top-1 accuracy (m = {EVAL_LENGTH}, {N_EVAL} prompts): {res['accuracy']:.4f}  (chance {1 / 63:.4f})")
    for h, (s, s2) in enumerate(zip(res["prev_token_scores"], res["two_back_scores"])):
        print(f"  L0H{h} previous-token score: {s:.3f}  two-back score: {s2:.3f}")
    for h, s in enumerate(res["lookup_scores"]):
        print(f"  L1H{h} lookup score:         {s:.3f}")

    training = dict(
        seed=args.seed,
        steps=STEPS,
        lr=LR,
        batch_size=BATCH_SIZE,
        threads=THREADS,
        final_loss=final_loss,
        query_accuracy=res["accuracy"],
        prev_token_scores=res["prev_token_scores"],
        two_back_scores=res["two_back_scores"],
        lookup_scores=res["lookup_scores"],
        seconds=round(seconds, 1),
        torch_version=torch.__version__,
        command=f"HF_HUB_OFFLINE=1 python experiments/train_toy_predecessor.py --seed {args.seed}",
    )
    check_tokens, _, _ = predecessor_prompts(16, EVAL_LENGTH, ORDINARY, BOS, torch.Generator().manual_seed(12345))
    save_shipped(model, NAME, config, training, check_tokens)


if __name__ == "__main__":
    main()
