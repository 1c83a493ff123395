"""Train the built-in model `toy-induction-2l` and write its weights into the package.

What it does
------------
Trains a tiny 2-layer, attention-only TransformerLens `HookedTransformer`
(4 heads per layer, d_model=64, d_head=16, n_ctx=32, vocab 64, LayerNorm,
learned positional embeddings) on a synthetic repeated-sequence task, so that
it learns the classic induction circuit: a previous-token head in layer 0 and
an induction head in layer 1.

Training data is generated on the fly from a seeded `torch.Generator`. Each
sequence has 32 tokens:

    BOS, r fresh random tokens, x_1..x_n, x_1..x_n, fresh random tokens up to 32

with token 0 = BOS, ordinary tokens 1..63, n uniform in 3..15 and the offset r
uniform in 0..31-2n (r = 0 is the built-in task format). The random offset
matters: with r always 0 the model learns a positional shortcut (the repeat
always starts right after BOS) and no clean induction head. The loss is
next-token cross-entropy on every position; final_loss is its mean over the
last 100 training steps.

At the end the script evaluates on 200 held-out sequences in the built-in task
format (BOS + 8 random tokens + the same 8 again, 17 tokens) and prints:
  * top-1 accuracy at positions 9..15 (predicting x_2..x_8 from the repeat),
  * per layer-0 head, the previous-token score: mean attention i -> i-1 over
    positions 1..16,
  * per layer-1 head, the induction score: mean attention i -> i-7 over
    positions 9..16 (the token after the previous occurrence of token i).

It then writes (overwriting)
  acdc_engine/models/weights/toy-induction-2l.safetensors  (the state_dict)
  acdc_engine/models/weights/toy-induction-2l.json         (config + training info)
and checks that a fresh model rebuilt from those files (strict loading)
produces the same logits.

How to run (from the repository root; about 2-3 minutes on 2 idle CPU cores)
--------------------------------------------------------------------------
    HF_HUB_OFFLINE=1 python experiments/train_toy_induction.py [--seed 0]

The run is deterministic given --seed (bitwise, on the same machine and torch build).
"""

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformer, HookedTransformerConfig

# -----------------------------------------------------------------------------
# settings
BOS = 0
D_VOCAB = 64
N_CTX = 32
MIN_PREFIX, MAX_PREFIX = 3, 15  # length n of the repeated prefix in training data
STEPS = 4000
BATCH_SIZE = 64
LR = 1e-3
WEIGHT_DECAY = 0.01
WARMUP = 100
N_EVAL = 200
EVAL_LEN = 8  # built-in task: BOS + 8 tokens + the same 8 tokens
OUT_DIR = Path(__file__).resolve().parent.parent / "acdc_engine" / "models" / "weights"
NAME = "toy-induction-2l"
# -----------------------------------------------------------------------------


def model_config(seed: int) -> dict:
    """Exactly the keyword arguments of HookedTransformerConfig for this model."""
    return dict(
        n_layers=2,
        n_heads=4,
        d_model=64,
        d_head=16,
        n_ctx=N_CTX,
        d_vocab=D_VOCAB,
        attn_only=True,
        normalization_type="LN",
        positional_embedding_type="standard",
        act_fn=None,
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
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)  # multi-threaded CPU backward is otherwise not bitwise reproducible
    torch.manual_seed(args.seed)
    t0 = time.time()

    config = model_config(args.seed)
    model = HookedTransformer(HookedTransformerConfig(**config))
    model.train()

    gen = torch.Generator().manual_seed(args.seed)
    eval_gen = torch.Generator().manual_seed(args.seed + 1_000_003)  # held out from training stream
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / WARMUP))

    recent = []  # losses of the last 100 steps
    for step in range(STEPS):
        tokens = training_batch(BATCH_SIZE, gen)
        logits = model(tokens)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, D_VOCAB), tokens[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        recent = (recent + [loss.item()])[-100:]
        if step % 500 == 0 or step == STEPS - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  (mean of last 100: {sum(recent) / len(recent):.4f})  {time.time() - t0:.1f}s")
    final_loss = sum(recent) / len(recent)  # mean training loss over the last 100 steps

    model.eval()
    res = evaluate(model, eval_batch(N_EVAL, eval_gen))
    seconds = time.time() - t0

    print(f"\nrepeated-token top-1 accuracy (positions 9..15, {N_EVAL} seqs): {res['accuracy']:.4f}  (chance {1 / 63:.4f})")
    for h, s in enumerate(res["prev_token_scores"]):
        print(f"  L0H{h} previous-token score: {s:.3f}")
    for h, s in enumerate(res["induction_scores"]):
        print(f"  L1H{h} induction score:      {s:.3f}")

    # -------------------------------------------------------------------------
    # save
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    weights_path = OUT_DIR / f"{NAME}.safetensors"
    json_path = OUT_DIR / f"{NAME}.json"
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights_path))
    meta = dict(
        config=config,
        training=dict(
            seed=args.seed,
            steps=STEPS,
            lr=LR,
            batch_size=BATCH_SIZE,
            final_loss=final_loss,
            repeated_token_accuracy=res["accuracy"],
            prev_token_scores=res["prev_token_scores"],
            induction_scores=res["induction_scores"],
            seconds=round(seconds, 1),
            torch_version=torch.__version__,
        ),
    )
    json_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"\nwrote {weights_path} ({weights_path.stat().st_size} bytes)")
    print(f"wrote {json_path} ({json_path.stat().st_size} bytes)")

    # -------------------------------------------------------------------------
    # verify: rebuild from the json config, load strictly, compare logits
    reloaded = HookedTransformer(HookedTransformerConfig(**json.loads(json_path.read_text())["config"]))
    reloaded.load_state_dict(load_file(str(weights_path)), strict=True)
    reloaded.eval()
    check = eval_batch(16, torch.Generator().manual_seed(12345))
    with torch.no_grad():
        diff = (reloaded(check) - model(check)).abs().max().item()
    print(f"reload check: strict load ok, max |logit diff| = {diff:.2e}")
    assert diff < 1e-5, diff


if __name__ == "__main__":
    main()
