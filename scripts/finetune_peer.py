#!/usr/bin/env python3
"""The PyTorch + PEFT peer of `trit finetune` for scripts/finetune-device.sh: LoRA training of a
randomly initialised model of the bitnet-b1.58-2B-4T shape (transformers' BitNetForCausalLM:
30 layers, hidden 2560, FFN 6912, 20 heads / 5 KV heads, vocab 128256, ReLU², tied embeddings)
in bf16 on the GPU, rank 16 (alpha 32) on q/k/v/o/gate/up/down, AdamW, one 512-token sequence
per optimizer step; gradient checkpointing only with --gradient-checkpointing (transformers'
non-reentrant checkpointing of every decoder layer, as trit's flag of that name). No downloads.

Prints and writes (--out) JSON: tokens/s (median over the measured steps), the allocator's
peak memory, and what was used (PEFT or, where the image lacks it, an equivalent LoRA layer of
our own: frozen bf16 base + fp32 A/B, PEFT's default adapter dtype)."""
import argparse
import json
import statistics
import sys
import time

import torch

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


VOCAB = 128256
DIMS_2B4T = dict(vocab_size=VOCAB, hidden_size=2560, intermediate_size=6912, num_hidden_layers=30,
                 num_attention_heads=20, num_key_value_heads=5)
# For a smoke test of this script on a CPU (--tiny --device cpu).
DIMS_TINY = dict(vocab_size=VOCAB, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2)


def build_model(shape, device):
    import transformers

    dims = dict(shape, max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=True)
    try:
        from transformers import BitNetConfig, BitNetForCausalLM
        cfg, cls, arch = BitNetConfig(hidden_act="relu2", **dims), BitNetForCausalLM, "BitNetForCausalLM"
    except ImportError:
        from transformers import LlamaConfig, LlamaForCausalLM
        cfg, cls, arch = LlamaConfig(hidden_act="relu2", **dims), LlamaForCausalLM, "LlamaForCausalLM"
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = cls(cfg)
    torch.set_default_dtype(torch.float32)
    model.config.use_cache = False
    return model, arch, transformers.__version__


class Lora(torch.nn.Module):
    """base(x) + (alpha/r)·B(A(x)), A Kaiming-uniform, B zero, adapters in fp32 (PEFT's default)."""

    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        self.a = torch.nn.Linear(base.in_features, r, bias=False, device=base.weight.device, dtype=torch.float32)
        self.b = torch.nn.Linear(r, base.out_features, bias=False, device=base.weight.device, dtype=torch.float32)
        torch.nn.init.zeros_(self.b.weight)
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + (self.b(self.a(x.to(torch.float32))) * self.scale).to(x.dtype)


def add_lora(model, r, alpha):
    try:
        from peft import LoraConfig, get_peft_model
        import peft

        cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, bias="none", target_modules=TARGETS,
                         task_type="CAUSAL_LM")
        return get_peft_model(model, cfg), f"peft {peft.__version__}"
    except ImportError as e:
        print(f"peft unavailable ({e}); using an equivalent LoRA layer", file=sys.stderr)
    for p in model.parameters():
        p.requires_grad_(False)
    for name, mod in list(model.named_modules()):
        for t in TARGETS:
            child = getattr(mod, t, None)
            if isinstance(child, torch.nn.Linear):
                setattr(mod, t, Lora(child, r, alpha))
    return model, "own LoRA layer (no peft)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32.0)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model, for a smoke test of this script")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="recompute each layer in the backward")
    a = ap.parse_args()
    cuda = a.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    t0 = time.time()
    model, arch, tf_version = build_model(DIMS_TINY if a.tiny else DIMS_2B4T, a.device)
    if a.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model, lora_impl = add_lora(model, a.rank, a.alpha)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    setup_s = time.time() - t0
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for step in range(a.warmup + a.steps):
        ids = torch.randint(0, VOCAB, (1, a.ctx), device=a.device)
        sync()
        t = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        dt = time.perf_counter() - t
        losses.append(float(loss))
        if step >= a.warmup:
            times.append(dt)
    r = {
        "who": "pytorch", "arch": arch, "transformers": tf_version, "torch": torch.__version__, "lora": lora_impl,
        "attn": getattr(model.config, "_attn_implementation", None), "dtype": "bfloat16",
        "trainable_params": n_train, "gradient_checkpointing": a.gradient_checkpointing, "ctx": a.ctx, "rank": a.rank, "steps": a.steps, "warmup": a.warmup,
        "step_s_median": statistics.median(times), "tok_s": a.ctx / statistics.median(times),
        "tok_s_mean": a.ctx * len(times) / sum(times),
        "peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20 if cuda else None,
        "setup_s": setup_s, "losses": losses, "gpu": torch.cuda.get_device_name() if cuda else a.device,
    }
    print(json.dumps(r, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(r, f, indent=1)


if __name__ == "__main__":
    main()
