"""Train the built-in induction models and write their weights into the package.

Models (``--model``)
--------------------
toy-induction-2l (the default model of ``acdc-discover``)
    2 layers x 4 heads, attention only, d_model=64, d_head=16, n_ctx=32, vocab 64, LayerNorm,
    learned positional embeddings; 4000 steps on 2 threads.
toy-induction-mlp-2l
    the same with an MLP block (d_mlp=256, GELU) after each attention layer; 8000 steps on one
    thread.

Both do induction, by different circuits. toy-induction-2l learns the classic one: a
previous-token head in layer 0 feeds the key input of induction heads in layer 1 (K-composition).
toy-induction-mlp-2l (seeds 0 and 2 alike) learns induction by Q-composition instead: a layer-0
duplicate-token head attends from a repeated token to its earlier occurrence and so tells it where
that was; layer-1 heads turn this into a query that selects, by position alone, the positions just
after the earlier occurrence, and copy the token there through value inputs that read layer-0 heads
looking one or two tokens back. Its previous-token and induction scores below are therefore low.

Training data is generated on the fly from a seeded ``torch.Generator``. Each sequence has 32 tokens:

    BOS, r fresh random tokens, x_1..x_n, x_1..x_n, fresh random tokens up to 32

with token 0 = BOS, ordinary tokens 1..63, n uniform in 3..15 and the offset r uniform in
0..31-2n (r = 0 is the built-in task format). The random offset matters: with r always 0 the model
learns a positional shortcut (the repeat always starts right after BOS) and no clean induction
head. The loss is next-token cross-entropy on every position; final_loss is its mean over the last
100 training steps.

At the end the script evaluates on 200 held-out sequences in the built-in task format (BOS + 8
random tokens + the same 8 again, 17 tokens) and prints:
  * top-1 accuracy at positions 9..15 (predicting x_2..x_8 from the repeat),
  * per layer-0 head, the previous-token score: mean attention i -> i-1 over positions 1..16,
  * per layer-1 head, the induction score: mean attention i -> i-7 over positions 9..16 (the
    token after the previous occurrence of token i).

It then writes (overwriting) ``acdc_engine/models/weights/<model>.safetensors`` (the state_dict)
and ``<model>.json`` (config + training facts) and checks that a fresh model rebuilt from those
files (strict loading) produces the same logits.

How to run (from the repository root)
-------------------------------------
    HF_HUB_OFFLINE=1 python experiments/train_toy_induction.py [--model toy-induction-2l] [--seed 0]

About 2-3 minutes on 2 idle CPU cores for toy-induction-2l; see the model's JSON file for the time
each shipped run took. The run is deterministic given --model and --seed (bitwise, on the same
machine and torch build).
"""

import argparse
import time

import torch
import torch.nn.functional as F
from transformer_lens import HookedTransformer

from training import deterministic_model, save_shipped, train

# -----------------------------------------------------------------------------
# settings
BOS = 0
D_VOCAB = 64
N_CTX = 32
MIN_PREFIX, MAX_PREFIX = 3, 15  # length n of the repeated prefix in training data
BATCH_SIZE = 64
LR = 1e-3
WEIGHT_DECAY = 0.01
WARMUP = 100
N_EVAL = 200
EVAL_LEN = 8  # built-in task: BOS + 8 tokens + the same 8 tokens
STEPS_MLP = 8000
# per model: HookedTransformerConfig fields beyond the shared ones, training steps, CPU threads
MODELS = {
    "toy-induction-2l": dict(config=dict(attn_only=True, act_fn=None), steps=4000, threads=2),
    "toy-induction-mlp-2l": dict(config=dict(attn_only=False, d_mlp=256, act_fn="gelu"), steps=STEPS_MLP, threads=1),
}
# -----------------------------------------------------------------------------


def model_config(name: str, seed: int) -> dict:
    """Exactly the keyword arguments of HookedTransformerConfig for model ``name``."""
    return dict(
        n_layers=2,
        n_heads=4,
        d_model=64,
        d_head=16,
        n_ctx=N_CTX,
        d_vocab=D_VOCAB,
        **MODELS[name]["config"],
        normalization_type="LN",
        positional_embedding_type="standard",
        seed=seed,
    )


def training_batch(batch_size: int, gen: torch.Generator) -> torch.Tensor:
    """BOS, r fresh tokens, x_1..x_n, x_1..x_n, fresh tokens ... (length N_CTX).

    n ~ U{3..15}; r ~ U{0..31-2n} is a random offset of the repeated block (r = 0 is
    exactly the built-in task format). Without the offset the model finds a
    positional shortcut (the repeat always starts at position 1) instead of an
    induction circuit.
    """
    body = N_CTX - 1
    fresh = torch.randint(1, D_VOCAB, (batch_size, body), generator=gen)
    n = torch.randint(MIN_PREFIX, MAX_PREFIX + 1, (batch_size, 1), generator=gen)
    r = (torch.rand((batch_size, 1), generator=gen) * (body - 2 * n + 1)).long()
    k = torch.arange(body).unsqueeze(0)
    # body positions k in [r + n, r + 2n) copy the token n places earlier
    src = torch.where((k >= r + n) & (k < r + 2 * n), k - n, k)
    tokens = torch.gather(fresh, 1, src)
    bos = torch.full((batch_size, 1), BOS, dtype=torch.long)
    return torch.cat([bos, tokens], dim=1)


def next_token_loss(model: HookedTransformer, gen: torch.Generator) -> torch.Tensor:
    """Next-token cross-entropy over every position of one fresh training batch."""
    tokens = training_batch(BATCH_SIZE, gen)
    logits = model(tokens)
    return F.cross_entropy(logits[:, :-1].reshape(-1, D_VOCAB), tokens[:, 1:].reshape(-1))


def eval_batch(n_seqs: int, gen: torch.Generator) -> torch.Tensor:
    """The built-in task format: BOS + 8 random tokens + the same 8 (17 tokens)."""
    x = torch.randint(1, D_VOCAB, (n_seqs, EVAL_LEN), generator=gen)
    bos = torch.full((n_seqs, 1), BOS, dtype=torch.long)
    return torch.cat([bos, x, x], dim=1)


@torch.no_grad()
def evaluate(model: HookedTransformer, tokens: torch.Tensor) -> dict:
    logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"))
    L = EVAL_LEN
    # position p (9..15) holds x_{p-8} of the repeat and should predict tokens[p + 1]
    pos = torch.arange(L + 1, 2 * L)
    preds = logits[:, pos].argmax(-1)
    acc = (preds == tokens[:, pos + 1]).float().mean().item()

    q = torch.arange(1, 2 * L + 1)  # query positions 1..16
    pattern0 = cache["blocks.0.attn.hook_pattern"]  # [batch, head, query, key]
    prev_scores = pattern0[:, :, q, q - 1].mean(dim=(0, 2)).tolist()

    q = torch.arange(L + 1, 2 * L + 1)  # query positions 9..16
    pattern1 = cache["blocks.1.attn.hook_pattern"]
    ind_scores = pattern1[:, :, q, q - (L - 1)].mean(dim=(0, 2)).tolist()
    return dict(accuracy=acc, prev_token_scores=prev_scores, induction_scores=ind_scores)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="toy-induction-2l")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = MODELS[args.model]

    t0 = time.time()
    config = model_config(args.model, args.seed)
    model = deterministic_model(config, args.seed, settings["threads"])
    final_loss = train(
        model, next_token_loss, steps=settings["steps"], lr=LR, weight_decay=WEIGHT_DECAY, warmup=WARMUP, seed=args.seed
    )
    eval_gen = torch.Generator().manual_seed(args.seed + 1_000_003)  # held out from training stream
    res = evaluate(model, eval_batch(N_EVAL, eval_gen))
    seconds = time.time() - t0

    print(f"\nrepeated-token top-1 accuracy (positions 9..15, {N_EVAL} seqs): {res['accuracy']:.4f}  (chance {1 / 63:.4f})")
    for h, s in enumerate(res["prev_token_scores"]):
        print(f"  L0H{h} previous-token score: {s:.3f}")
    for h, s in enumerate(res["induction_scores"]):
        print(f"  L1H{h} induction score:      {s:.3f}")

    training = dict(
        seed=args.seed,
        steps=settings["steps"],
        lr=LR,
        batch_size=BATCH_SIZE,
        threads=settings["threads"],
        final_loss=final_loss,
        repeated_token_accuracy=res["accuracy"],
        prev_token_scores=res["prev_token_scores"],
        induction_scores=res["induction_scores"],
        seconds=round(seconds, 1),
        torch_version=torch.__version__,
        command=f"HF_HUB_OFFLINE=1 python experiments/train_toy_induction.py --model {args.model} --seed {args.seed}",
    )
    save_shipped(model, args.model, config, training, eval_batch(16, torch.Generator().manual_seed(12345)))


if __name__ == "__main__":
    main()
