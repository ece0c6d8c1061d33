mod common;

use trit_finetune::{adapter, schedule::Schedule, AdamW, InitOptions, ScheduleKind, Session};
use trit_llama::{Model, ModelParams};

#[test]
fn smoke() {
    let path = common::tq2_model();
    let model = Model::load(path, &ModelParams { n_gpu_layers: 0, ..Default::default() }).unwrap();
    let dir = common::tmpdir("smoke");
    let w = adapter::init_weights(path, &common::spec(4), InitOptions { seed: 1, b_std: 0.0 }).unwrap();
    let ap = dir.join("a.gguf");
    w.save(&ap).unwrap();
    let sched = Schedule { kind: ScheduleKind::Constant, lr: 1e-3, lr_min: 0.0, warmup_steps: 0, total_steps: 10 };
    let mut s = Session::new(&model, &ap, common::params(256), sched, AdamW::default()).unwrap();
    let samples = trit_finetune::data::plain_windows(&model, &common::TEXT.repeat(8), 256).unwrap();
    for i in 0..6 {
        let l = s.train_window(&samples[0]).unwrap();
        eprintln!("step {i} loss {l}");
    }
    let g = s.gradients().unwrap();
    eprintln!("{} grads, first norm {}", g.len(), g[0].1.iter().map(|x| x * x).sum::<f32>().sqrt());
    let st = s.optimizer_state().unwrap();
    eprintln!("iter {} tensors {}", st.iter, st.tensors.len());
}
