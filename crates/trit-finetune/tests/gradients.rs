//! Adapter gradients from llama.cpp's backward graph against central finite differences, and
//! the loss mask: masked positions contribute exactly zero gradient.

mod common;

use trit_finetune::data::{plain_windows, Sample, MASKED};
use trit_finetune::schedule::{Schedule, MIN_LR};
use trit_finetune::{adapter, AdamW, InitOptions, LoraWeights, ScheduleKind, Session};
use trit_llama::{Model, ModelParams};

fn load(path: &std::path::Path) -> Model {
    Model::load(path, &ModelParams { n_gpu_layers: 0, ..Default::default() }).unwrap()
}

/// A session whose AdamW step is negligible (lr = 1e-12): a training step only computes gradients.
fn grad_session<'m>(model: &'m Model, path: &std::path::Path, tag: &str) -> Session<'m> {
    let dir = common::tmpdir(tag);
    let w = adapter::init_weights(path, &common::spec(4), InitOptions { seed: 7, b_std: 0.05 }).unwrap();
    let ap = dir.join("a.gguf");
    w.save(&ap).unwrap();
    let sched = Schedule { kind: ScheduleKind::Constant, lr: MIN_LR, lr_min: 0.0, warmup_steps: 0, total_steps: 1 };
    Session::new(model, &ap, common::params(256), sched, AdamW::default()).unwrap()
}

/// The gradient of ggml's loss at the current weights, leaving the weights as they were.
fn gradient(s: &mut Session, sample: &Sample) -> Vec<(String, Vec<f32>)> {
    let w0 = s.weights().unwrap();
    s.train_window(sample).unwrap();
    let g = s.gradients().unwrap();
    s.set_weights(&w0).unwrap();
    g
}

/// ggml's loss (mean over all n_ctx positions, masked ones counting 0), forward only.
fn ggml_loss(s: &mut Session, sample: &Sample) -> f64 {
    s.eval_window(sample).unwrap() * sample.n_trained() as f64 / sample.tokens.len() as f64
}

fn shifted(w: &LoraWeights, g: &[(String, Vec<f32>)], scale: f64) -> LoraWeights {
    let mut w = w.clone();
    let find = |name: &str| &g.iter().find(|(n, _)| n == name).unwrap().1;
    for p in &mut w.pairs {
        for (suffix, v) in [("lora_a", &mut p.a), ("lora_b", &mut p.b)] {
            let gv = find(&format!("{}.{suffix}", p.base));
            for (x, d) in v.iter_mut().zip(gv) {
                *x = (*x as f64 + scale * *d as f64) as f32;
            }
        }
    }
    w
}

#[test]
fn adapter_gradients_match_central_finite_differences() {
    // F16 projections: the loss is smooth in the adapter (TQ2_0's Q8_K activation rounding is not).
    let path = common::f16_model();
    let model = load(path);
    let sample = plain_windows(&model, &common::TEXT.repeat(8), 256).unwrap().remove(0);
    let mut s = grad_session(&model, path, "fd");
    let g = gradient(&mut s, &sample);
    assert_eq!(g.len(), 2 * 7 * 2, "A and B for 7 targets x 2 layers");
    let norm2: f64 = g.iter().flat_map(|(_, v)| v.iter()).map(|&x| x as f64 * x as f64).sum();
    let norm = norm2.sqrt();
    assert!(norm > 1e-3, "gradient vanishes: {norm}");
    let w0 = s.weights().unwrap();

    // 1. Directional derivative along the gradient: (L(w + h·g/|g|) − L(w − h·g/|g|)) / 2h = |g|.
    let h = 1e-2;
    s.set_weights(&shifted(&w0, &g, h / norm)).unwrap();
    let lp = ggml_loss(&mut s, &sample);
    s.set_weights(&shifted(&w0, &g, -h / norm)).unwrap();
    let lm = ggml_loss(&mut s, &sample);
    s.set_weights(&w0).unwrap();
    let fd = (lp - lm) / (2.0 * h);
    let rel = (fd - norm).abs() / norm;
    eprintln!("directional: analytic |g| = {norm:.6}, finite difference = {fd:.6}, rel err {rel:.2e}");
    assert!(rel < 2e-2, "directional derivative off by {rel:.3e} (analytic {norm}, FD {fd})");

    // 2. Per tensor: the directional derivative along that tensor's own gradient is |g_T|.
    let mut n_tensors = 0;
    for (name, gv) in &g {
        let nt: f64 = gv.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        if nt < 0.5 {
            continue;
        }
        let only: Vec<(String, Vec<f32>)> =
            g.iter().map(|(n, v)| (n.clone(), if n == name { v.clone() } else { vec![0f32; v.len()] })).collect();
        s.set_weights(&shifted(&w0, &only, h / nt)).unwrap();
        let lp = ggml_loss(&mut s, &sample);
        s.set_weights(&shifted(&w0, &only, -h / nt)).unwrap();
        let lm = ggml_loss(&mut s, &sample);
        s.set_weights(&w0).unwrap();
        let fd = (lp - lm) / (2.0 * h);
        let rel = (fd - nt).abs() / nt;
        eprintln!("{name}: |g_T| {nt:.5} FD {fd:.5} rel err {rel:.2e}");
        assert!(rel < 2e-2, "{name}: |g_T| {nt} vs FD {fd}");
        n_tensors += 1;
    }
    assert!(n_tensors >= 10, "only {n_tensors} tensors had a usable gradient");

    // 3. Single coordinates: the largest entries of an A and a B in each layer. One coordinate
    // moves the loss by ~1e-2, while F16 activation rounding makes ~1e-3 of noise: loose bound.
    let mut checked = 0;
    for name in [
        "blk.0.attn_q.weight.lora_a",
        "blk.0.ffn_up.weight.lora_b",
        "blk.1.attn_v.weight.lora_a",
        "blk.1.ffn_down.weight.lora_b",
    ] {
        let gv = &g.iter().find(|(n, _)| n == name).unwrap().1;
        let mut idx: Vec<usize> = (0..gv.len()).collect();
        idx.sort_by(|&i, &j| gv[j].abs().total_cmp(&gv[i].abs()));
        for &i in idx.iter().take(3) {
            let h: f64 = std::env::var("FD_H").ok().and_then(|v| v.parse().ok()).unwrap_or(2e-2);
            let mut one = vec![(name.to_string(), vec![0f32; gv.len()])];
            one[0].1[i] = 1.0;
            let pad: Vec<(String, Vec<f32>)> =
                g.iter().filter(|(n, _)| n != name).map(|(n, v)| (n.clone(), vec![0f32; v.len()])).chain(one).collect();
            s.set_weights(&shifted(&w0, &pad, h)).unwrap();
            let lp = ggml_loss(&mut s, &sample);
            s.set_weights(&shifted(&w0, &pad, -h)).unwrap();
            let lm = ggml_loss(&mut s, &sample);
            s.set_weights(&w0).unwrap();
            let fd = (lp - lm) / (2.0 * h);
            let an = gv[i] as f64;
            let err = (fd - an).abs();
            eprintln!("{name}[{i}]: analytic {an:+.6e} FD {fd:+.6e} abs err {err:.1e}");
            assert!(err <= 0.1 * an.abs() + 1e-2, "{name}[{i}]: analytic {an} vs FD {fd}");
            checked += 1;
        }
    }
    assert_eq!(checked, 12);
}

#[test]
fn gradients_are_not_accumulated_across_steps() {
    // Two steps at the same weights must give the same gradient (the pinned ggml-opt never
    // cleared its accumulators with rebuilt graphs; patch 0003 does).
    let path = common::tq2_model();
    let model = load(path);
    let sample = plain_windows(&model, &common::TEXT.repeat(8), 256).unwrap().remove(0);
    let mut s = grad_session(&model, path, "acc");
    let g1 = gradient(&mut s, &sample);
    let g2 = gradient(&mut s, &sample);
    assert_eq!(g1, g2);
}

#[test]
fn masked_positions_contribute_exactly_zero_gradient() {
    let path = common::tq2_model();
    let model = load(path);
    let base = plain_windows(&model, &common::TEXT.repeat(8), 256).unwrap().remove(0);
    // Train on the first 100 positions only; mask the rest.
    let mut masked = base.clone();
    for l in &mut masked.labels[100..] {
        *l = MASKED;
    }
    // Same trained positions, different tokens (inputs and hidden labels) after them. With a
    // causal model, a masked tail that contributes nothing leaves the gradient bit-identical.
    let mut other = masked.clone();
    for (i, t) in other.tokens[101..].iter_mut().enumerate() {
        *t = ((i * 37 + 11) % 400) as i32;
    }
    let mut s = grad_session(&model, path, "mask");
    let g_masked = gradient(&mut s, &masked);
    let g_other = gradient(&mut s, &other);
    assert_eq!(g_masked, g_other, "masked positions changed the gradient");
    // Control: unmasking the tail does change it.
    let mut unmasked_other = other.clone();
    unmasked_other.labels[100..].copy_from_slice(&base.labels[100..]);
    let g_unmasked = gradient(&mut s, &unmasked_other);
    assert_ne!(g_masked, g_unmasked);
    // And the loss over trained positions ignores the tail as well.
    assert_eq!(s.eval_window(&masked).unwrap(), s.eval_window(&other).unwrap());
}
