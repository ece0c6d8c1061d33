//! Converted fixtures through the pinned llama.cpp (CPU) against logits from Hugging Face
//! transformers (scripts/make_fixtures.py). Tolerances and why:
//!
//! * Weight-only reference (`ref_wonly_*.npy`: transformers with activation quantisation
//!   switched off) vs `--type f16`: llama.cpp computes the same function, rounding
//!   activations to f16 inside its F16 matmuls and keeping an f16 KV cache (2^-11 relative
//!   each). Bound: max|Δ| ≤ 1e-2 · max|ref| (measured ≤ 3.2e-3). Top-1 must agree at every
//!   position whose reference top-1/top-2 margin exceeds 2·max|Δ|, where an f16 rounding
//!   cannot swap them (measured: top-1 agrees at 173 of 174 positions overall; the one
//!   miss is a near-tie with margin 9e-4).
//! * Int8 reference (`ref_*.npy`: the real BitNet b1.58 forward, per-token absmax int8
//!   activations) vs TQ2_0/TQ1_0: llama.cpp quantises activations to Q8_K per 256-value
//!   block instead of per token, so codes differ where a row spans several blocks (the FFN
//!   down projection) and at float ties; these tiny random models amplify a single code
//!   change to ~3e-2·max|logit|. Bound: 1.2e-1 · max|ref| (measured ≤ 6.8e-2), top-1 equal
//!   wherever the reference margin exceeds 2·max|Δ|.
//! * TQ2_0 and TQ1_0 must give bit-identical logits (same codes, same kernels' arithmetic
//!   on integers), and their weights, dequantised by ggml's own `to_float` and scaled,
//!   must equal the F16 conversion's weights bit for bit.

mod common;

use common::*;

fn check(model: &str, ty: &str, weight_only: bool, bound: f32) {
    let gguf = converted(model, ty);
    for (i, p) in reference(model).iter().enumerate() {
        let (shape, got) = trit_logits(&gguf, &p.ids, &[]);
        let (ref_shape, want) = if weight_only { &p.weight_only } else { &p.logits };
        assert_eq!(&shape, ref_shape, "{model} prompt {i}: logits shape");
        let (rel, abs) = errors(&got, want);
        eprintln!("{model} {ty} prompt {i}: max rel err {rel:.2e} (bound {bound:.1e}), max abs {abs:.3}");
        assert!(rel <= bound, "{model} {ty} prompt {i} ({:?}): relative error {rel} > {bound}", p.text);
        let vocab = shape[1];
        let mut checked = 0;
        for (pos, (g, w)) in got.chunks(vocab).zip(want.chunks(vocab)).enumerate() {
            if margin(w) > 2.0 * abs {
                checked += 1;
                assert_eq!(argmax(g), argmax(w), "{model} {ty} prompt {i}: top-1 differs at position {pos}");
            }
        }
        eprintln!("  top-1 agrees at all {checked} of {} positions with a clear margin", shape[0]);
    }
}

#[test]
fn bf16_checkpoint_f16_weights_match_transformers_weight_only() {
    check("bitnet-2b4t-bf16", "f16", true, 1e-2);
}

#[test]
fn packed_checkpoint_f16_weights_match_transformers_weight_only() {
    check("bitnet-2b4t-packed", "f16", true, 1e-2);
}

#[test]
fn onebitllm_checkpoint_f16_weights_match_transformers_weight_only() {
    check("bitnet-1bitllm", "f16", true, 1e-2);
}

#[test]
fn bf16_checkpoint_tq2_0_matches_transformers_int8() {
    check("bitnet-2b4t-bf16", "tq2_0", false, 0.12);
}

#[test]
fn packed_checkpoint_tq2_0_matches_transformers_int8() {
    check("bitnet-2b4t-packed", "tq2_0", false, 0.12);
}

#[test]
fn onebitllm_checkpoint_tq2_0_matches_transformers_int8() {
    check("bitnet-1bitllm", "tq2_0", false, 0.12);
}

#[test]
fn tq1_0_matches_transformers_int8() {
    check("bitnet-2b4t-bf16", "tq1_0", false, 0.12);
}

#[test]
fn tq1_0_and_tq2_0_give_identical_logits() {
    for model in MODELS {
        let a = converted(model, "tq2_0");
        let b = converted(model, "tq1_0");
        for p in reference(model) {
            assert_eq!(trit_logits(&a, &p.ids, &[]), trit_logits(&b, &p.ids, &[]), "{model}: TQ1_0 != TQ2_0");
        }
    }
}

#[test]
fn ternary_weights_dequantise_to_the_f16_conversion_bit_for_bit() {
    for model in MODELS {
        let f16 = trit_gguf::GgufFile::open(converted(model, "f16")).unwrap();
        for ty in ["tq2_0", "tq1_0"] {
            let tq = trit_gguf::GgufFile::open(converted(model, ty)).unwrap();
            let mut n_ternary = 0;
            for t in tq.tensors().iter().filter(|t| t.ty.is_ternary()) {
                n_ternary += 1;
                let n = t.n_elements() as usize;
                let codes = trit_llama::quant::ggml_to_float(t.ty.id(), tq.tensor_data(&t.name).unwrap(), n).unwrap();
                assert!(codes.iter().all(|&c| c == -1.0 || c == 0.0 || c == 1.0), "{}: not ternary", t.name);
                let scale_name = t.name.replace(".weight", ".scale");
                let scale = f32::from_le_bytes(tq.tensor_data(&scale_name).unwrap()[..4].try_into().unwrap());
                let want = f16.tensor_data(&t.name).unwrap();
                assert_eq!(want.len(), 2 * n, "{}: F16 tensor size", t.name);
                for (i, (c, w)) in codes.iter().zip(want.chunks_exact(2)).enumerate() {
                    let got = half::f16::from_f32(c * scale).to_bits();
                    let w = u16::from_le_bytes([w[0], w[1]]);
                    assert_eq!(got, w, "{model} {ty} {}: element {i}", t.name);
                }
            }
            assert_eq!(n_ternary, 14, "{model} {ty}: 7 projections x 2 layers");
        }
    }
}
