//! End-to-end: the loss falls, resume is bit-identical, the saved adapter loads in llama.cpp
//! and changes the logits exactly as the training-time forward says, data errors name file:line.

mod common;

use std::path::Path;

use trit_finetune::data::{self, plain_windows, BadLine, DataOptions, Dataset};
use trit_finetune::{train, LoraWeights, ScheduleKind, TrainOptions, Warmup};
use trit_llama::{Batch, CacheType, Context, ContextParams, LoraAdapter, Model, ModelParams};

fn load(path: &Path) -> Model {
    Model::load(path, &ModelParams { n_gpu_layers: 0, ..Default::default() }).unwrap()
}

fn text_dataset(model: &Model) -> Dataset {
    let text = common::TEXT.repeat(12);
    Dataset { samples: plain_windows(model, &text, 256).unwrap(), ..Default::default() }
}

fn options(out: &Path) -> TrainOptions {
    let mut o = TrainOptions::new(common::spec(8), common::params(256), out.to_path_buf());
    o.progress = false;
    o.lr = 2e-3;
    o.adamw.weight_decay = 0.0;
    o
}

#[test]
fn loss_falls_on_a_small_fixed_dataset() {
    let path = common::tq2_model();
    let model = load(path);
    let ds = text_dataset(&model);
    let dir = common::tmpdir("learn");
    let mut o = options(&dir.join("a.gguf"));
    o.epochs = 6;
    o.val_split = 0.25;
    o.log_csv = Some(dir.join("log.csv"));
    o.plot_png = Some(dir.join("loss.png"));
    let r = train(&model, path, &ds, &o).unwrap();
    let (first, last) = (r.first_train_loss.unwrap(), r.last_train_loss.unwrap());
    eprintln!(
        "{} windows, {} steps: loss {first:.3} -> {last:.3}, val {:?}, {:.0} tok/s",
        ds.samples.len(),
        r.steps,
        r.last_val_loss,
        r.tokens_per_s
    );
    assert!(first > 10.0, "the random fixture should start near its initial loss, got {first}");
    assert!(last < 3.0, "loss only fell from {first} to {last}");
    let val = r.last_val_loss.unwrap();
    assert!(val < 0.5 * first, "validation loss {val} did not fall");
    let csv = std::fs::read_to_string(dir.join("log.csv")).unwrap();
    assert!(csv.starts_with("step,epoch,lr,train_loss,val_loss,tokens_per_s,rss_mb,peak_rss_mb,compute_mb,gpu_peak_mb"));
    assert_eq!(csv.lines().count(), 1 + r.log.len());
    assert!(r.log.iter().all(|row| row.compute_bytes > 0), "a step logged no compute buffer");
    assert!(std::fs::read(dir.join("loss.png")).unwrap().starts_with(b"\x89PNG"));
    assert!(r.peak_rss_bytes > 0);
}

#[test]
fn resume_from_a_checkpoint_is_bit_identical() {
    let path = common::tq2_model();
    let dir = common::tmpdir("resume");
    let run = |tag: &str, stop: Option<u64>, resume: bool| {
        let model = load(path);
        let ds = text_dataset(&model);
        let mut o = options(&dir.join(format!("{tag}.gguf")));
        o.epochs = 2;
        o.val_split = 0.2;
        o.schedule = ScheduleKind::Cosine;
        o.warmup = Warmup::Steps(2);
        o.adamw.weight_decay = 0.01;
        o.checkpoint_dir = dir.join(format!("ckpt-{tag}"));
        o.checkpoint_every = 3;
        o.stop_after = stop;
        if resume {
            o.checkpoint_dir = dir.join("ckpt-part");
            o.resume = Some(dir.join("ckpt-part"));
        }
        train(&model, path, &ds, &o).unwrap()
    };
    let full = run("full", None, false);
    let part = run("part", Some(5), false);
    assert_eq!(part.steps, 5);
    let ckpt = part.stopped_at.unwrap();
    assert!(ckpt.ends_with("checkpoint_step_00000005"), "{}", ckpt.display());
    let resumed = run("resumed", None, true);
    assert_eq!(resumed.steps, full.steps);
    let a = LoraWeights::load(&dir.join("full.gguf")).unwrap();
    let b = LoraWeights::load(&dir.join("resumed.gguf")).unwrap();
    let bits = |w: &LoraWeights| -> Vec<u32> {
        w.pairs.iter().flat_map(|p| p.a.iter().chain(p.b.iter())).map(|x| x.to_bits()).collect()
    };
    assert_eq!(bits(&a), bits(&b), "resumed adapter differs from the uninterrupted run");
    // The log continues too: the same steps, rates and losses (f32 precision: meta.json is text).
    let key = |r: &trit_finetune::checkpoint::LogRow| {
        (r.step, r.epoch, r.lr.to_bits(), r.train_loss.map(|l| l as f32), r.val_loss.map(|l| l as f32))
    };
    assert_eq!(full.log.iter().map(key).collect::<Vec<_>>(), resumed.log.iter().map(key).collect::<Vec<_>>());

    // A checkpoint with another rank is refused.
    let model = load(path);
    let ds = text_dataset(&model);
    let mut o = options(&dir.join("bad.gguf"));
    o.spec = common::spec(4);
    o.resume = Some(ckpt);
    let e = format!("{:#}", train(&model, path, &ds, &o).unwrap_err());
    assert!(e.contains("rank 8") && e.contains("rank 4"), "{e}");
}

/// Mean cross-entropy over labelled positions, from logits (f64).
fn ce(logits: &[f32], n_vocab: usize, labels: &[i32]) -> f64 {
    let mut sum = 0.0;
    let mut n = 0;
    for (row, &l) in logits.chunks(n_vocab).zip(labels) {
        if l < 0 {
            continue;
        }
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
        sum += lse - row[l as usize] as f64;
        n += 1;
    }
    sum / n as f64
}

fn logits_with(model: &Model, adapter: Option<&Path>, tokens: &[i32]) -> Vec<f32> {
    let cp = ContextParams {
        n_ctx: 256,
        n_batch: 256,
        n_ubatch: 256,
        n_threads: 2,
        n_threads_batch: 2,
        flash_attn: Some(false),
        cache_type_k: CacheType::F32,
        cache_type_v: CacheType::F32,
        ..Default::default()
    };
    let lora = adapter.map(|p| LoraAdapter::load(model, p).unwrap());
    let mut ctx = Context::new(model, &cp).unwrap();
    if let Some(l) = &lora {
        ctx.set_adapters(&[(l, 1.0)]).unwrap();
    }
    let mut b = Batch::new(tokens.len());
    for (i, &t) in tokens.iter().enumerate() {
        b.push(t, i as i32, 0, true).unwrap();
    }
    ctx.decode(&b).unwrap();
    (0..tokens.len()).flat_map(|i| ctx.logits_ith(i as i32).unwrap().to_vec()).collect()
}

#[test]
fn saved_adapter_loads_in_llama_cpp_and_matches_the_training_forward() {
    let path = common::tq2_model();
    let dir = common::tmpdir("compat");
    let out = dir.join("a.gguf");
    let model = load(path);
    let ds = text_dataset(&model);
    let mut o = options(&out);
    o.epochs = 2;
    train(&model, path, &ds, &o).unwrap();
    drop(model);

    // The file is what llama.cpp expects.
    let f = trit_gguf::GgufFile::open(&out).unwrap();
    assert_eq!(f.get_str("general.type").unwrap(), "adapter");
    assert_eq!(f.get_str("adapter.type").unwrap(), "lora");
    assert_eq!(f.get_f64("adapter.lora.alpha").unwrap(), 16.0);
    let a = f.tensor_info("blk.0.attn_q.weight.lora_a").unwrap();
    let b = f.tensor_info("blk.0.ffn_down.weight.lora_b").unwrap();
    assert_eq!((a.ne.clone(), b.ne.clone()), (vec![256, 8], vec![8, 256]));

    // Loaded by llama_adapter_lora_init into a plain inference context, it gives the loss the
    // training-time forward (ggml-opt's eval graph) computes for the same adapter.
    let model = load(path);
    let sample = &ds.samples[0];
    let base = logits_with(&model, None, &sample.tokens);
    let tuned = logits_with(&model, Some(&out), &sample.tokens);
    let n_vocab = model.n_vocab();
    let (l_base, l_tuned) = (ce(&base, n_vocab, &sample.labels), ce(&tuned, n_vocab, &sample.labels));
    let max_diff = base.iter().zip(&tuned).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    eprintln!("inference loss: base {l_base:.4}, with adapter {l_tuned:.4}; max logit change {max_diff:.3}");
    assert!(max_diff > 1.0 && l_tuned < l_base - 1.0, "the adapter barely changes the model");

    let session_params = common::params(256);
    let sched = trit_finetune::Schedule {
        kind: ScheduleKind::Constant,
        lr: 1e-3,
        lr_min: 0.0,
        warmup_steps: 0,
        total_steps: 1,
    };
    let mut s =
        trit_finetune::Session::new(&model, &out, session_params, sched, trit_finetune::AdamW::default()).unwrap();
    let l_train_fwd = s.eval_window(sample).unwrap();
    let rel = (l_train_fwd - l_tuned).abs() / l_tuned;
    eprintln!("training-forward loss {l_train_fwd:.6} vs inference {l_tuned:.6} (rel {rel:.1e})");
    assert!(rel < 1e-3, "training forward {l_train_fwd} vs inference {l_tuned}");
    drop(s);
    drop(model);

    // `trit lora merge`: the merged model (F16 projections, scales folded in) computes what
    // base + adapter computes, up to F16 weights/activations vs TQ2_0 with Q8_K activations.
    let merged = dir.join("merged.gguf");
    let r = trit_finetune::merge::merge(path, &out, 1.0, &merged).unwrap();
    assert_eq!(r.merged.len(), 14);
    let mf = trit_gguf::GgufFile::open(&merged).unwrap();
    assert_eq!(mf.tensor_info("blk.0.attn_q.weight").unwrap().ty, trit_gguf::GgmlType::F16);
    assert!(mf.tensor_info("blk.0.attn_q.scale").is_none());
    let mm = load(&merged);
    let lm = logits_with(&mm, None, &sample.tokens);
    let l_merged = ce(&lm, n_vocab, &sample.labels);
    let top1 = |v: &[f32]| -> Vec<usize> {
        v.chunks(n_vocab).map(|r| r.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0).collect()
    };
    let (t_merged, t_tuned) = (top1(&lm), top1(&tuned));
    let agree = t_merged.iter().zip(&t_tuned).filter(|(a, b)| a == b).count() as f64 / t_merged.len() as f64;
    eprintln!("merged model loss {l_merged:.4} vs base+adapter {l_tuned:.4}; top-1 agreement {agree:.3}");
    assert!((l_merged - l_tuned).abs() < 0.05 * l_tuned + 0.02, "merged {l_merged} vs adapter {l_tuned}");
    assert!(agree > 0.9, "top-1 agreement {agree}");
}

#[test]
fn jsonl_errors_name_file_and_line_and_can_be_skipped() {
    let path = common::tq2_model();
    let model = load(path);
    let dir = common::tmpdir("jsonl");
    let f = dir.join("d.jsonl");
    std::fs::write(
        &f,
        "{\"prompt\":\"Q: 2+2?\",\"completion\":\" A: 4\"}\n\n{\"prompt\": oops}\n\
         {\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"},{\"role\":\"assistant\",\"content\":\"Hello there\"}]}\n",
    )
    .unwrap();
    let opts = DataOptions { n_ctx: 256, assistant_only: true, on_bad_line: BadLine::Error, chat_template: None };
    let e = format!("{:#}", data::load(&model, &f, &opts).unwrap_err());
    assert!(e.contains(&format!("{}:3:", f.display())), "{e}");
    let ds = data::load(&model, &f, &DataOptions { on_bad_line: BadLine::Skip, ..opts.clone() }).unwrap();
    assert_eq!((ds.samples.len(), ds.skipped_bad_lines), (2, 1));

    // Assistant-only loss: exactly the completion / the assistant reply (and its end token) train.
    let trained = |s: &data::Sample| -> String {
        let ids: Vec<i32> = s.labels.iter().copied().filter(|&l| l >= 0).collect();
        model.detokenize(&ids, true)
    };
    assert_eq!(trained(&ds.samples[0]), format!(" A: 4{}", model.detokenize(&[model.eos()], true)));
    let chat = trained(&ds.samples[1]);
    assert!(chat.starts_with("Hello there") && !chat.contains("Hi") && !chat.contains("user"), "{chat:?}");
    // Without the flag every real position trains.
    let all =
        data::load(&model, &f, &DataOptions { assistant_only: false, on_bad_line: BadLine::Skip, ..opts }).unwrap();
    assert!(all.samples[1].n_trained() > ds.samples[1].n_trained());
}
