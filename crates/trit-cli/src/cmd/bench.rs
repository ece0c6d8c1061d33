//! `trit bench` / `llama-bench`: prompt-processing (ppN) and generation (tgN) speed, printed
//! as llama-bench's markdown table, JSON or CSV.

use std::time::Instant;

use anyhow::{bail, Result};
use serde::Serialize;
use trit_llama::{Batch, Context, ContextParams, Model, ModelParams, Token};

use crate::args::{self, flag, Flag};
use crate::common;
use trit_kernels::ggml::TernaryKernels;

const FLAGS: &[Flag] = &[
    flag(&["-m", "--model"], Some("FNAME"), "model path(s), comma-separated or repeated"),
    flag(&["-p", "--n-prompt"], Some("N"), "prompt lengths to test (default: 512)"),
    flag(&["-n", "--n-gen"], Some("N"), "generation lengths to test (default: 128)"),
    flag(&["-pg"], Some("PP,TG"), "a prompt of PP tokens then TG generated, timed together (repeatable)"),
    flag(&["-d", "--n-depth"], Some("N"), "tokens already in the KV cache when each test starts (default: 0)"),
    flag(&["-b", "--batch-size"], Some("N"), "logical batch size (default: 2048)"),
    flag(&["-ub", "--ubatch-size"], Some("N"), "physical batch size (default: 512)"),
    flag(&["-t", "--threads"], Some("N"), "threads (default: cores)"),
    flag(&["-ngl", "--n-gpu-layers"], Some("N"), "layers to offload (default: 99)"),
    flag(&["-fa", "--flash-attn"], Some("0|1"), "flash attention (default: 0)"),
    flag(&["-mmp", "--mmap"], Some("0|1"), "memory-map the model, comma-separated to compare (default: 1)"),
    common::OVERRIDE_TENSOR_FLAG,
    flag(&["-r", "--repetitions"], Some("N"), "repetitions of each test (default: 5)"),
    flag(&["-o", "--output"], Some("md|json|jsonl|csv"), "output format (default: md)"),
    flag(&["--no-warmup"], None, "skip the warm-up run"),
    flag(
        &["--ternary-kernels"],
        Some("trit|ggml"),
        "CPU kernels for TQ1_0/TQ2_0 matrix products, comma-separated to compare (default: trit)",
    ),
    flag(&["-nr", "--no-repack"], Some("0|1"), "1: keep TQ1_0 weights as stored for trit's kernels too (default: 0)"),
    flag(&["-v", "--verbose"], None, "show llama.cpp's log"),
];

const ABOUT: &str = "trit bench (llama-bench): measure prompt processing and generation speed";

#[derive(Serialize)]
struct Record {
    build_commit: String,
    build_number: u32,
    cpu_info: String,
    gpu_info: String,
    backends: String,
    model_filename: String,
    model_type: String,
    model_size: u64,
    model_n_params: u64,
    n_batch: u32,
    n_ubatch: u32,
    n_threads: i32,
    n_gpu_layers: i32,
    flash_attn: bool,
    use_mmap: bool,
    n_prompt: usize,
    n_gen: usize,
    n_depth: usize,
    test_time: String,
    avg_ns: u64,
    stddev_ns: u64,
    avg_ts: f64,
    stddev_ts: f64,
    samples_ns: Vec<u64>,
    samples_ts: Vec<f64>,
}

pub fn main(prog: &str, argv: &[String]) -> Result<()> {
    let Some(p) = args::parse_or_help(prog, ABOUT, FLAGS, argv)? else {
        return Ok(());
    };
    trit_llama::log::set_verbose(p.has("-v"));
    let models: Vec<String> = p.list("-m", &[])?;
    if models.is_empty() {
        bail!("error: -m is required\n{}", args::usage_line(prog, FLAGS));
    }
    let prompts: Vec<usize> = p.list("-p", &[512])?;
    let gens: Vec<usize> = p.list("-n", &[128])?;
    let depths: Vec<usize> = p.list("-d", &[0])?;
    let mut pairs = Vec::new();
    for v in p.all("-pg") {
        let pair: Option<(usize, usize)> =
            v.split_once(',').and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
        match pair {
            Some(pair) => pairs.push(pair),
            None => bail!("error: invalid value '{v}' for -pg (expected PP,TG)"),
        }
    }
    let threads: Vec<i32> = p.list("-t", &[trit_llama::ContextParams::default().n_threads])?;
    let ngls: Vec<String> = p.list("-ngl", &["99".to_string()])?;
    let mmaps: Vec<bool> = p
        .list("-mmp", &["1".to_string()])?
        .iter()
        .map(|v| match v.as_str() {
            "1" | "on" | "true" => Ok(true),
            "0" | "off" | "false" => Ok(false),
            _ => bail!("error: invalid value '{v}' for -mmp (expected 0 or 1)"),
        })
        .collect::<Result<_>>()?;
    let n_batch: u32 = p.get("-b", 2048)?;
    let n_ubatch: u32 = p.get("-ub", 512)?;
    let reps: usize = p.get("-r", 5)?;
    let flash_attn = matches!(p.str("-fa"), Some("1" | "on" | "true"));
    let format = p.str("-o").unwrap_or("md").to_string();
    if !["md", "json", "jsonl", "csv"].contains(&format.as_str()) {
        bail!("error: -o must be md, json, jsonl or csv");
    }
    if reps == 0 {
        bail!("error: -r must be at least 1");
    }
    let warmup = !p.has("--no-warmup");
    let kernel_sets = common::ternary_kernels(&p, true)?;
    let no_repack = match p.str("-nr") {
        None | Some("0") => false,
        Some("1") => true,
        Some(v) => bail!("error: invalid value '{v}' for -nr (expected 0 or 1)"),
    };
    let tensor_overrides = common::tensor_overrides(&p)?;

    let mut records = Vec::new();
    let mut md_header_done = false;
    for path in &models {
        for (ngl, &use_mmap) in ngls.iter().flat_map(|n| mmaps.iter().map(move |m| (n, m))) {
            let ngl = common::parse_ngl(ngl)?;
            common::preflight(std::path::Path::new(path))?;
            // One load per repack setting: trit's kernels get TQ1_0 weights re-encoded as
            // TQ2_0 (unless -nr 1), ggml's get them as stored, as llama.cpp would load them.
            let mut models: [Option<Model>; 2] = [None, None];
            let mut tests: Vec<(usize, usize)> = prompts.iter().filter(|&&n| n > 0).map(|&n| (n, 0)).collect();
            tests.extend(gens.iter().filter(|&&n| n > 0).map(|&n| (0, n)));
            tests.extend(pairs.iter().filter(|&&(pp, tg)| pp + tg > 0));
            for &t in &threads {
                for (&(n_prompt, n_gen), &depth) in tests.iter().flat_map(|t| depths.iter().map(move |d| (t, d))) {
                    for &kern in &kernel_sets {
                        common::install_ternary_kernels(kern);
                        let repack = kern == TernaryKernels::Trit && !no_repack;
                        let slot = &mut models[repack as usize];
                        if slot.is_none() {
                            *slot = Some(Model::load(
                                std::path::Path::new(path),
                                &ModelParams {
                                    n_gpu_layers: ngl,
                                    use_mmap,
                                    tensor_overrides: tensor_overrides.clone(),
                                    use_extra_bufts: repack,
                                    ..Default::default()
                                },
                            )?);
                        }
                        let model = slot.as_ref().expect("loaded above");
                        let cp = ContextParams {
                            n_ctx: (depth + n_prompt + n_gen).max(1) as u32,
                            n_batch,
                            n_ubatch,
                            n_threads: t,
                            n_threads_batch: t,
                            flash_attn: Some(flash_attn),
                            ..Default::default()
                        };
                        let test = Test { n_prompt, n_gen, depth };
                        let mut rec = run_test(model, path, &cp, ngl, test, reps, warmup)?;
                        rec.use_mmap = use_mmap;
                        if rec.backends == "CPU" {
                            // Which CPU kernels ran the ternary products (not shown once offloaded).
                            rec.backends = format!("CPU/{}", kern.name());
                        }
                        if format == "md" {
                            if !md_header_done {
                                print_md_header();
                                md_header_done = true;
                            }
                            print_md_row(&rec);
                        }
                        records.push(rec);
                    }
                }
            }
        }
    }
    match format.as_str() {
        "md" => println!("\nbuild: trit {} ({})", env!("CARGO_PKG_VERSION"), trit_sys::LLAMA_CPP_PIN),
        "json" => println!("{}", serde_json::to_string_pretty(&records)?),
        "jsonl" => {
            for r in &records {
                println!("{}", serde_json::to_string(r)?);
            }
        }
        _ => print_csv(&records)?,
    }
    Ok(())
}

/// With TRIT_KERNEL_STATS=1 ([`trit_kernels::stats`]): trit's CPU kernels' time and weight
/// bytes over a test's timed runs, printed on stderr, one line a kind of product and one for
/// the rest of the time (ggml's other ops, its barriers, the host):
/// `kernel-stats test=tg128 kind=f16-matvec ops=384 bytes=… secs=… gbps=… share=0.4810`.
#[derive(Default)]
struct KernelTimes(Vec<trit_kernels::stats::KernelTime>);

impl KernelTimes {
    /// Drop what the hooks recorded since the last call (warm-up, the untimed `-d` prompt).
    fn skip(&mut self) {
        if trit_kernels::stats::enabled() {
            trit_kernels::stats::take();
        }
    }

    /// Add what the hooks recorded since the last call.
    fn add(&mut self) {
        if !trit_kernels::stats::enabled() {
            return;
        }
        let new = trit_kernels::stats::take();
        if self.0.is_empty() {
            self.0 = new;
            return;
        }
        for (a, b) in self.0.iter_mut().zip(new) {
            a.ops += b.ops;
            a.bytes += b.bytes;
            a.secs += b.secs;
        }
    }

    fn report(&self, test: &str, wall_secs: f64) {
        let ran: Vec<_> = self.0.iter().filter(|k| k.ops > 0).collect();
        if ran.is_empty() || wall_secs <= 0.0 {
            return;
        }
        for k in &ran {
            eprintln!(
                "kernel-stats test={test} kind={} ops={} bytes={} secs={:.6} gbps={:.2} share={:.4}",
                k.kind.name(),
                k.ops,
                k.bytes,
                k.secs,
                k.gbps(),
                k.secs / wall_secs
            );
        }
        let rest = wall_secs - ran.iter().map(|k| k.secs).sum::<f64>();
        eprintln!("kernel-stats test={test} kind=other secs={rest:.6} share={:.4}", rest / wall_secs);
    }
}

/// A test's name as llama-bench prints it: `pp512`, `tg128`, `pp512+tg128`, `… @ d4096`.
fn test_name(t: Test) -> String {
    let base = match (t.n_prompt, t.n_gen) {
        (p, 0) => format!("pp{p}"),
        (0, g) => format!("tg{g}"),
        (p, g) => format!("pp{p}+tg{g}"),
    };
    if t.depth > 0 {
        format!("{base} @ d{}", t.depth)
    } else {
        base
    }
}

/// One test: a prompt of `n_prompt` tokens, then `n_gen` generated one at a time, timed
/// after `depth` tokens were put in the KV cache (untimed), as llama-bench's `-d`.
#[derive(Clone, Copy)]
struct Test {
    n_prompt: usize,
    n_gen: usize,
    depth: usize,
}

fn run_test(
    model: &Model,
    path: &str,
    cp: &ContextParams,
    ngl: i32,
    test: Test,
    reps: usize,
    warmup: bool,
) -> Result<Record> {
    let Test { n_prompt, n_gen, depth } = test;
    let mut ctx = Context::new(model, cp)?;
    let mut rng = SplitMix(0x5eed_1234);
    if warmup {
        if n_prompt > 0 {
            prompt_pass(&mut ctx, model, n_prompt, &mut rng)?;
        }
        if n_gen > 0 {
            ctx.clear_memory();
            gen_pass(&mut ctx, model, 1, &mut rng)?;
        }
        ctx.synchronize();
    }
    let mut samples_ns = Vec::with_capacity(reps);
    let mut kernel_times = KernelTimes::default();
    for _ in 0..reps {
        ctx.clear_memory();
        if depth > 0 {
            prompt_pass(&mut ctx, model, depth, &mut rng)?;
            ctx.synchronize();
        }
        kernel_times.skip();
        let t0 = Instant::now();
        if n_prompt > 0 {
            prompt_pass(&mut ctx, model, n_prompt, &mut rng)?;
        }
        if n_gen > 0 {
            gen_pass(&mut ctx, model, n_gen, &mut rng)?;
        }
        // As llama-bench: a GPU backend may still be computing when decode returns.
        ctx.synchronize();
        samples_ns.push(t0.elapsed().as_nanos() as u64);
        kernel_times.add();
    }
    kernel_times.report(&test_name(test), samples_ns.iter().sum::<u64>() as f64 / 1e9);
    let n_tokens = (n_prompt + n_gen) as f64;
    let samples_ts: Vec<f64> = samples_ns.iter().map(|&ns| 1e9 * n_tokens / ns as f64).collect();
    let (avg_ns, sd_ns) = mean_sd(&samples_ns.iter().map(|&v| v as f64).collect::<Vec<_>>());
    let (avg_ts, sd_ts) = mean_sd(&samples_ts);
    // As llama-bench: the GPU backend's name when layers are offloaded to it.
    let gpu = trit_llama::gpu_backend();
    let backends = match (&gpu, ngl) {
        (Some(_), n) if n != 0 => "Vulkan,CPU",
        _ => "CPU",
    };
    Ok(Record {
        build_commit: format!("trit-{}", env!("CARGO_PKG_VERSION")),
        build_number: 0,
        cpu_info: cpu_name(),
        gpu_info: gpu.unwrap_or_default(),
        backends: backends.into(),
        model_filename: path.to_string(),
        model_type: model.desc(),
        model_size: model.size(),
        model_n_params: model.n_params(),
        n_batch: cp.n_batch,
        n_ubatch: cp.n_ubatch,
        n_threads: cp.n_threads,
        n_gpu_layers: ngl,
        flash_attn: cp.flash_attn == Some(true),
        use_mmap: true,
        n_prompt,
        n_gen,
        n_depth: depth,
        test_time: now_rfc3339(),
        avg_ns: avg_ns as u64,
        stddev_ns: sd_ns as u64,
        avg_ts,
        stddev_ts: sd_ts,
        samples_ns,
        samples_ts,
    })
}

/// `n` random tokens (BOS first at position 0) after whatever the cache holds.
fn prompt_pass(ctx: &mut Context<'_>, model: &Model, n: usize, rng: &mut SplitMix) -> Result<()> {
    let n_vocab = model.n_vocab() as u64;
    let start = ctx_pos(ctx);
    let mut tokens: Vec<Token> = (0..n).map(|_| (rng.next() % n_vocab) as Token).collect();
    if start == 0 {
        tokens[0] = model.bos();
    }
    let n_batch = ctx.n_batch() as usize;
    let mut batch = Batch::new(n_batch);
    for (ci, chunk) in tokens.chunks(n_batch).enumerate() {
        batch.clear();
        for (i, &t) in chunk.iter().enumerate() {
            batch.push(t, start + (ci * n_batch + i) as i32, 0, i + 1 == chunk.len())?;
        }
        ctx.decode(&batch)?;
    }
    Ok(())
}

fn gen_pass(ctx: &mut Context<'_>, model: &Model, n: usize, rng: &mut SplitMix) -> Result<()> {
    let n_vocab = model.n_vocab() as u64;
    let mut batch = Batch::new(1);
    let mut t = model.bos();
    // Continue after whatever the prompt pass left (pos 0 when it did not run).
    let start = ctx_pos(ctx);
    for i in 0..n {
        batch.clear();
        batch.push(t, start + i as i32, 0, true)?;
        ctx.decode(&batch)?;
        t = (rng.next() % n_vocab) as Token;
    }
    Ok(())
}

fn ctx_pos(ctx: &Context<'_>) -> i32 {
    ctx.pos_max(0) + 1
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

const MD_COLS: [(&str, usize, bool); 7] = [
    ("model", 30, false),
    ("size", 10, true),
    ("params", 10, true),
    ("backend", 10, false),
    ("threads", 7, true),
    ("test", 15, true),
    ("t/s", 20, true),
];

fn md_line(cells: &[String]) -> String {
    let mut s = String::from("|");
    for ((_, w, right), c) in MD_COLS.iter().zip(cells) {
        if *right {
            s.push_str(&format!(" {c:>w$} |"));
        } else {
            s.push_str(&format!(" {c:<w$} |"));
        }
    }
    s
}

fn print_md_header() {
    println!("{}", md_line(&MD_COLS.iter().map(|(n, _, _)| n.to_string()).collect::<Vec<_>>()));
    let mut s = String::from("|");
    for (_, w, right) in MD_COLS {
        if right {
            s.push_str(&format!(" {}: |", "-".repeat(w - 1)));
        } else {
            s.push_str(&format!(" {} |", "-".repeat(w)));
        }
    }
    println!("{s}");
}

fn print_md_row(r: &Record) {
    let size = format!("{:.2} GiB", r.model_size as f64 / (1u64 << 30) as f64);
    let params = if r.model_n_params >= 1_000_000_000 {
        format!("{:.2} B", r.model_n_params as f64 / 1e9)
    } else {
        format!("{:.2} M", r.model_n_params as f64 / 1e6)
    };
    let test = test_name(Test { n_prompt: r.n_prompt, n_gen: r.n_gen, depth: r.n_depth });
    let ts = format!("{:.2} ± {:.2}", r.avg_ts, r.stddev_ts);
    println!(
        "{}",
        md_line(&[r.model_type.clone(), size, params, r.backends.clone(), r.n_threads.to_string(), test, ts])
    );
}

fn print_csv(records: &[Record]) -> Result<()> {
    println!("build_commit,build_number,cpu_info,gpu_info,backends,model_filename,model_type,model_size,model_n_params,n_batch,n_ubatch,n_threads,n_gpu_layers,flash_attn,use_mmap,n_prompt,n_gen,n_depth,test_time,avg_ns,stddev_ns,avg_ts,stddev_ts");
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    for r in records {
        println!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.6},{:.6}",
            q(&r.build_commit),
            r.build_number,
            q(&r.cpu_info),
            q(&r.gpu_info),
            q(&r.backends),
            q(&r.model_filename),
            q(&r.model_type),
            r.model_size,
            r.model_n_params,
            r.n_batch,
            r.n_ubatch,
            r.n_threads,
            r.n_gpu_layers,
            r.flash_attn as u8,
            r.use_mmap as u8,
            r.n_prompt,
            r.n_gen,
            r.n_depth,
            q(&r.test_time),
            r.avg_ns,
            r.stddev_ns,
            r.avg_ts,
            r.stddev_ts
        );
    }
    Ok(())
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default()
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to a (year, month, day) date (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A small deterministic generator for benchmark tokens.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_417), (2025, 11, 25));
    }

    #[test]
    fn mean_and_sample_sd() {
        let (m, s) = super::mean_sd(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!((s - 1.0).abs() < 1e-12);
    }
}
