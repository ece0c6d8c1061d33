//! Compiles every kernel variant in `kernels/` to SPIR-V with `glslc` (the shaderc package)
//! and writes `kernels.rs`, which embeds them with `include_bytes!`. The Metal translation
//! check (`spirv-cross --msl`) is the `kernels_translate_to_msl` test.

use std::path::PathBuf;
use std::process::Command;

/// (variant name, source file, defines). `src/kernels.rs` refers to variants by name.
const VARIANTS: &[(&str, &str, &[&str])] = &[
    ("mm_f32_1", "mul_mat.comp", &["A_F32", "NCOLS=1"]),
    ("mm_f32_8", "mul_mat.comp", &["A_F32", "NCOLS=8"]),
    ("mm_f16_1", "mul_mat.comp", &["A_F16", "NCOLS=1"]),
    ("mm_f16_8", "mul_mat.comp", &["A_F16", "NCOLS=8"]),
    ("mm_tq2_1", "mul_mat.comp", &["A_TQ2", "NCOLS=1"]),
    ("mm_tq2_8", "mul_mat.comp", &["A_TQ2", "NCOLS=8"]),
    ("mm_tq1_1", "mul_mat.comp", &["A_TQ1", "NCOLS=1"]),
    ("mm_tq1_8", "mul_mat.comp", &["A_TQ1", "NCOLS=8"]),
    ("mmt_f32", "mul_mm.comp", &["A_F32"]),
    ("mmt_f16", "mul_mm.comp", &["A_F16"]),
    // f16 weights on tensor cores (f16 16 x 16 x 16 into f32); `_emu`: emulated, for tests.
    ("mmt_f16_cm", "mul_mm_f16_cm.comp", &[]),
    ("mmt_f16_emu", "mul_mm_f16_cm.comp", &[]),
    // The same for aligned operands contiguous along k: 128 x 128 tiles, 16-byte loads.
    ("mmtv_f16_cm", "mul_mm_f16_cmv.comp", &[]),
    ("mmtv_f16_emu", "mul_mm_f16_cmv.comp", &[]),
    ("mmt_tq2", "mul_mm.comp", &["A_TQ2"]),
    ("mmt_tq1", "mul_mm.comp", &["A_TQ1"]),
    ("quant_q8k", "quant_q8k.comp", &[]),
    ("quant_q8", "quant_q8.comp", &[]),
    ("mv_tq2_1", "mul_mv_tq.comp", &["A_TQ2", "NCOLS=1"]),
    ("mv_tq2_8", "mul_mv_tq.comp", &["A_TQ2", "NCOLS=8"]),
    ("mv_tq1_1", "mul_mv_tq.comp", &["A_TQ1", "NCOLS=1"]),
    ("mv_tq1_8", "mul_mv_tq.comp", &["A_TQ1", "NCOLS=8"]),
    ("mv_tq2_1_dot", "mul_mv_tq.comp", &["A_TQ2", "NCOLS=1", "USE_DOT"]),
    ("mv_tq2_8_dot", "mul_mv_tq.comp", &["A_TQ2", "NCOLS=8", "USE_DOT"]),
    ("mv_tq1_1_dot", "mul_mv_tq.comp", &["A_TQ1", "NCOLS=1", "USE_DOT"]),
    ("mv_tq1_8_dot", "mul_mv_tq.comp", &["A_TQ1", "NCOLS=8", "USE_DOT"]),
    ("mv_tq2_1_multi", "mul_mv_tq.comp", &["A_TQ2", "NCOLS=1", "MULTI"]),
    ("mv_tq1_1_multi", "mul_mv_tq.comp", &["A_TQ1", "NCOLS=1", "MULTI"]),
    ("mv_tq2_1_multi_dot", "mul_mv_tq.comp", &["A_TQ2", "NCOLS=1", "MULTI", "USE_DOT"]),
    ("mv_tq1_1_multi_dot", "mul_mv_tq.comp", &["A_TQ1", "NCOLS=1", "MULTI", "USE_DOT"]),
    ("mv_tq2_1_u1", "mul_mv_tq.comp", &["A_TQ2", "NCOLS=1", "U=1"]),
    ("mv_tq1_1_u1", "mul_mv_tq.comp", &["A_TQ1", "NCOLS=1", "U=1"]),
    ("mv_tq2_1_u1_dot", "mul_mv_tq.comp", &["A_TQ2", "NCOLS=1", "USE_DOT", "U=1"]),
    ("mv_tq1_1_u1_dot", "mul_mv_tq.comp", &["A_TQ1", "NCOLS=1", "USE_DOT", "U=1"]),
    ("mmq_tq2", "mul_mmq_tq.comp", &["A_TQ2"]),
    ("mmq_tq1", "mul_mmq_tq.comp", &["A_TQ1"]),
    ("mmq_tq2_dot", "mul_mmq_tq.comp", &["A_TQ2", "USE_DOT"]),
    ("mmqb_tq2", "mul_mmq_tq_big.comp", &["A_TQ2"]),
    ("mmqb_tq1", "mul_mmq_tq_big.comp", &["A_TQ1"]),
    ("mmqb_tq2_dot", "mul_mmq_tq_big.comp", &["A_TQ2", "USE_DOT"]),
    ("mmqb_tq1_dot", "mul_mmq_tq_big.comp", &["A_TQ1", "USE_DOT"]),
    ("mmq_tq1_dot", "mul_mmq_tq.comp", &["A_TQ1", "USE_DOT"]),
    // The norm (and its int8 rounding) computed by each workgroup before its rows (NORM).
    ("mv_tq2_1_norm", "mul_mv_tq.comp", &["A_TQ2", "NCOLS=1", "NORM", "WG=512"]),
    ("mv_tq2_1_normr", "mul_mv_tq.comp", &["A_TQ2", "NCOLS=1", "NORM", "WG=512", "RELU2"]),
    ("mv_tq2_1_res_norm", "mul_mv_tq.comp", &["A_TQ2", "NCOLS=1", "NORM", "WG=512", "RES"]),
    ("mv_tq2_1_res_normr", "mul_mv_tq.comp", &["A_TQ2", "NCOLS=1", "NORM", "WG=512", "RES", "RELU2"]),
    ("mv_tq2_1_multi_norm", "mul_mv_tq.comp", &["A_TQ2", "NCOLS=1", "NORM", "WG=512", "MULTI"]),
    ("mv_tq2_1_multi_norm_rope", "mul_mv_tq.comp", &["A_TQ2", "NCOLS=1", "NORM", "WG=512", "MULTI", "ROPE"]),
    ("mv_tq2_1_multi_norm_rope_kv", "mul_mv_tq.comp", &["A_TQ2", "NCOLS=1", "NORM", "WG=512", "MULTI", "ROPE", "KV"]),
    // QKV that also computes the token's attention (attn_tail.glsl).
    (
        "mv_tq2_1_multi_norm_rope_kv_attn",
        "mul_mv_tq.comp",
        &["A_TQ2", "NCOLS=1", "NORM", "WG=512", "MULTI", "ROPE", "KV", "ATTN"],
    ),
    ("mv_tq2_1_multi_normr", "mul_mv_tq.comp", &["A_TQ2", "NCOLS=1", "NORM", "WG=512", "MULTI", "RELU2"]),
    ("mv_tq2_1_norm_dot", "mul_mv_tq.comp", &["A_TQ2", "NCOLS=1", "NORM", "WG=512", "USE_DOT"]),
    ("mv_tq2_1_normr_dot", "mul_mv_tq.comp", &["A_TQ2", "NCOLS=1", "NORM", "WG=512", "RELU2", "USE_DOT"]),
    ("mv_tq2_1_res_norm_dot", "mul_mv_tq.comp", &["A_TQ2", "NCOLS=1", "NORM", "WG=512", "RES", "USE_DOT"]),
    ("mv_tq2_1_res_normr_dot", "mul_mv_tq.comp", &["A_TQ2", "NCOLS=1", "NORM", "WG=512", "RES", "RELU2", "USE_DOT"]),
    ("mv_tq2_1_multi_norm_dot", "mul_mv_tq.comp", &["A_TQ2", "NCOLS=1", "NORM", "WG=512", "MULTI", "USE_DOT"]),
    (
        "mv_tq2_1_multi_norm_rope_dot",
        "mul_mv_tq.comp",
        &["A_TQ2", "NCOLS=1", "NORM", "WG=512", "MULTI", "ROPE", "USE_DOT"],
    ),
    (
        "mv_tq2_1_multi_norm_rope_kv_dot",
        "mul_mv_tq.comp",
        &["A_TQ2", "NCOLS=1", "NORM", "WG=512", "MULTI", "ROPE", "KV", "USE_DOT"],
    ),
    (
        "mv_tq2_1_multi_norm_rope_kv_attn_dot",
        "mul_mv_tq.comp",
        &["A_TQ2", "NCOLS=1", "NORM", "WG=512", "MULTI", "ROPE", "KV", "ATTN", "USE_DOT"],
    ),
    (
        "mv_tq2_1_multi_normr_dot",
        "mul_mv_tq.comp",
        &["A_TQ2", "NCOLS=1", "NORM", "WG=512", "MULTI", "RELU2", "USE_DOT"],
    ),
    ("mv_tq1_1_norm", "mul_mv_tq.comp", &["A_TQ1", "NCOLS=1", "NORM", "WG=512"]),
    ("mv_tq1_1_normr", "mul_mv_tq.comp", &["A_TQ1", "NCOLS=1", "NORM", "WG=512", "RELU2"]),
    ("mv_tq1_1_res_norm", "mul_mv_tq.comp", &["A_TQ1", "NCOLS=1", "NORM", "WG=512", "RES"]),
    ("mv_tq1_1_res_normr", "mul_mv_tq.comp", &["A_TQ1", "NCOLS=1", "NORM", "WG=512", "RES", "RELU2"]),
    ("mv_tq1_1_multi_norm", "mul_mv_tq.comp", &["A_TQ1", "NCOLS=1", "NORM", "WG=512", "MULTI"]),
    ("mv_tq1_1_multi_norm_rope", "mul_mv_tq.comp", &["A_TQ1", "NCOLS=1", "NORM", "WG=512", "MULTI", "ROPE"]),
    ("mv_tq1_1_multi_norm_rope_kv", "mul_mv_tq.comp", &["A_TQ1", "NCOLS=1", "NORM", "WG=512", "MULTI", "ROPE", "KV"]),
    ("mv_tq1_1_multi_normr", "mul_mv_tq.comp", &["A_TQ1", "NCOLS=1", "NORM", "WG=512", "MULTI", "RELU2"]),
    ("mv_tq1_1_norm_dot", "mul_mv_tq.comp", &["A_TQ1", "NCOLS=1", "NORM", "WG=512", "USE_DOT"]),
    ("mv_tq1_1_normr_dot", "mul_mv_tq.comp", &["A_TQ1", "NCOLS=1", "NORM", "WG=512", "RELU2", "USE_DOT"]),
    ("mv_tq1_1_res_norm_dot", "mul_mv_tq.comp", &["A_TQ1", "NCOLS=1", "NORM", "WG=512", "RES", "USE_DOT"]),
    ("mv_tq1_1_res_normr_dot", "mul_mv_tq.comp", &["A_TQ1", "NCOLS=1", "NORM", "WG=512", "RES", "RELU2", "USE_DOT"]),
    ("mv_tq1_1_multi_norm_dot", "mul_mv_tq.comp", &["A_TQ1", "NCOLS=1", "NORM", "WG=512", "MULTI", "USE_DOT"]),
    (
        "mv_tq1_1_multi_norm_rope_dot",
        "mul_mv_tq.comp",
        &["A_TQ1", "NCOLS=1", "NORM", "WG=512", "MULTI", "ROPE", "USE_DOT"],
    ),
    (
        "mv_tq1_1_multi_norm_rope_kv_dot",
        "mul_mv_tq.comp",
        &["A_TQ1", "NCOLS=1", "NORM", "WG=512", "MULTI", "ROPE", "KV", "USE_DOT"],
    ),
    (
        "mv_tq1_1_multi_normr_dot",
        "mul_mv_tq.comp",
        &["A_TQ1", "NCOLS=1", "NORM", "WG=512", "MULTI", "RELU2", "USE_DOT"],
    ),
    ("mv_tq2_1_res", "mul_mv_tq.comp", &["A_TQ2", "NCOLS=1", "RES"]),
    ("mv_tq1_1_res", "mul_mv_tq.comp", &["A_TQ1", "NCOLS=1", "RES"]),
    ("mv_tq2_1_res_dot", "mul_mv_tq.comp", &["A_TQ2", "NCOLS=1", "USE_DOT", "RES"]),
    ("mv_tq1_1_res_dot", "mul_mv_tq.comp", &["A_TQ1", "NCOLS=1", "USE_DOT", "RES"]),
    ("mmq_tq2_res", "mul_mmq_tq.comp", &["A_TQ2", "RES"]),
    ("mmq_tq1_res", "mul_mmq_tq.comp", &["A_TQ1", "RES"]),
    ("mmq_tq2_res_dot", "mul_mmq_tq.comp", &["A_TQ2", "USE_DOT", "RES"]),
    ("mmq_tq1_res_dot", "mul_mmq_tq.comp", &["A_TQ1", "USE_DOT", "RES"]),
    ("mmqb_tq2_res", "mul_mmq_tq_big.comp", &["A_TQ2", "RES"]),
    ("mmqb_tq1_res", "mul_mmq_tq_big.comp", &["A_TQ1", "RES"]),
    ("mmqb_tq2_res_dot", "mul_mmq_tq_big.comp", &["A_TQ2", "USE_DOT", "RES"]),
    ("mmqb_tq1_res_dot", "mul_mmq_tq_big.comp", &["A_TQ1", "USE_DOT", "RES"]),
    // Tensor-core tiles (VK_NV_cooperative_matrix, 16 x 8 x 32 int8; `_n16`: 16 x 16 x 32),
    // 64 x 64 (mmq) and 128 x 64 (mmqb); `_emu` / `_n16_emu`: the same kernel with the matrix
    // instructions emulated, for tests on devices without the extension.
    ("mmq_tq2_cm", "mul_mmq_tq_cm.comp", &["A_TQ2"]),
    ("mmq_tq2_n16_cm", "mul_mmq_tq_cm.comp", &["A_TQ2", "NS=16"]),
    ("mmq_tq2_emu", "mul_mmq_tq_cm.comp", &["A_TQ2"]),
    ("mmq_tq2_n16_emu", "mul_mmq_tq_cm.comp", &["A_TQ2", "NS=16"]),
    ("mmq_tq2_res_cm", "mul_mmq_tq_cm.comp", &["A_TQ2", "RES"]),
    ("mmq_tq2_res_n16_cm", "mul_mmq_tq_cm.comp", &["A_TQ2", "RES", "NS=16"]),
    ("mmq_tq2_res_emu", "mul_mmq_tq_cm.comp", &["A_TQ2", "RES"]),
    ("mmq_tq2_res_n16_emu", "mul_mmq_tq_cm.comp", &["A_TQ2", "RES", "NS=16"]),
    ("mmq_tq1_cm", "mul_mmq_tq_cm.comp", &["A_TQ1"]),
    ("mmq_tq1_n16_cm", "mul_mmq_tq_cm.comp", &["A_TQ1", "NS=16"]),
    ("mmq_tq1_emu", "mul_mmq_tq_cm.comp", &["A_TQ1"]),
    ("mmq_tq1_n16_emu", "mul_mmq_tq_cm.comp", &["A_TQ1", "NS=16"]),
    ("mmq_tq1_res_cm", "mul_mmq_tq_cm.comp", &["A_TQ1", "RES"]),
    ("mmq_tq1_res_n16_cm", "mul_mmq_tq_cm.comp", &["A_TQ1", "RES", "NS=16"]),
    ("mmq_tq1_res_emu", "mul_mmq_tq_cm.comp", &["A_TQ1", "RES"]),
    ("mmq_tq1_res_n16_emu", "mul_mmq_tq_cm.comp", &["A_TQ1", "RES", "NS=16"]),
    // 32 x 64 tiles (SMALL) for products with few 64-row tiles.
    ("mmqs_tq2_cm", "mul_mmq_tq_cm.comp", &["A_TQ2", "SMALL"]),
    ("mmqs_tq2_n16_cm", "mul_mmq_tq_cm.comp", &["A_TQ2", "SMALL", "NS=16"]),
    ("mmqs_tq2_emu", "mul_mmq_tq_cm.comp", &["A_TQ2", "SMALL"]),
    ("mmqs_tq2_n16_emu", "mul_mmq_tq_cm.comp", &["A_TQ2", "SMALL", "NS=16"]),
    ("mmqs_tq2_res_cm", "mul_mmq_tq_cm.comp", &["A_TQ2", "SMALL", "RES"]),
    ("mmqs_tq2_res_n16_cm", "mul_mmq_tq_cm.comp", &["A_TQ2", "SMALL", "RES", "NS=16"]),
    ("mmqs_tq2_res_emu", "mul_mmq_tq_cm.comp", &["A_TQ2", "SMALL", "RES"]),
    ("mmqs_tq2_res_n16_emu", "mul_mmq_tq_cm.comp", &["A_TQ2", "SMALL", "RES", "NS=16"]),
    ("mmqs_tq1_cm", "mul_mmq_tq_cm.comp", &["A_TQ1", "SMALL"]),
    ("mmqs_tq1_n16_cm", "mul_mmq_tq_cm.comp", &["A_TQ1", "SMALL", "NS=16"]),
    ("mmqs_tq1_emu", "mul_mmq_tq_cm.comp", &["A_TQ1", "SMALL"]),
    ("mmqs_tq1_n16_emu", "mul_mmq_tq_cm.comp", &["A_TQ1", "SMALL", "NS=16"]),
    ("mmqs_tq1_res_cm", "mul_mmq_tq_cm.comp", &["A_TQ1", "SMALL", "RES"]),
    ("mmqs_tq1_res_n16_cm", "mul_mmq_tq_cm.comp", &["A_TQ1", "SMALL", "RES", "NS=16"]),
    ("mmqs_tq1_res_emu", "mul_mmq_tq_cm.comp", &["A_TQ1", "SMALL", "RES"]),
    ("mmqs_tq1_res_n16_emu", "mul_mmq_tq_cm.comp", &["A_TQ1", "SMALL", "RES", "NS=16"]),
    ("mmqb_tq2_cm", "mul_mmq_tq_cm.comp", &["A_TQ2", "BIG"]),
    ("mmqb_tq2_n16_cm", "mul_mmq_tq_cm.comp", &["A_TQ2", "BIG", "NS=16"]),
    ("mmqb_tq2_emu", "mul_mmq_tq_cm.comp", &["A_TQ2", "BIG"]),
    ("mmqb_tq2_n16_emu", "mul_mmq_tq_cm.comp", &["A_TQ2", "BIG", "NS=16"]),
    ("mmqb_tq2_res_cm", "mul_mmq_tq_cm.comp", &["A_TQ2", "BIG", "RES"]),
    ("mmqb_tq2_res_n16_cm", "mul_mmq_tq_cm.comp", &["A_TQ2", "BIG", "RES", "NS=16"]),
    ("mmqb_tq2_res_emu", "mul_mmq_tq_cm.comp", &["A_TQ2", "BIG", "RES"]),
    ("mmqb_tq2_res_n16_emu", "mul_mmq_tq_cm.comp", &["A_TQ2", "BIG", "RES", "NS=16"]),
    ("mmqb_tq1_cm", "mul_mmq_tq_cm.comp", &["A_TQ1", "BIG"]),
    ("mmqb_tq1_n16_cm", "mul_mmq_tq_cm.comp", &["A_TQ1", "BIG", "NS=16"]),
    ("mmqb_tq1_emu", "mul_mmq_tq_cm.comp", &["A_TQ1", "BIG"]),
    ("mmqb_tq1_n16_emu", "mul_mmq_tq_cm.comp", &["A_TQ1", "BIG", "NS=16"]),
    ("mmqb_tq1_res_cm", "mul_mmq_tq_cm.comp", &["A_TQ1", "BIG", "RES"]),
    ("mmqb_tq1_res_n16_cm", "mul_mmq_tq_cm.comp", &["A_TQ1", "BIG", "RES", "NS=16"]),
    ("mmqb_tq1_res_emu", "mul_mmq_tq_cm.comp", &["A_TQ1", "BIG", "RES"]),
    ("mmqb_tq1_res_n16_emu", "mul_mmq_tq_cm.comp", &["A_TQ1", "BIG", "RES", "NS=16"]),
    ("mv_f16_1", "mul_mv_f16.comp", &["NCOLS=1"]),
    ("mv_f16_8", "mul_mv_f16.comp", &["NCOLS=8"]),
    ("add_f32", "binary.comp", &["OP_ADD"]),
    ("mul_f32", "binary.comp", &["OP_MUL"]),
    ("relu_sqr_mul_f32", "binary.comp", &["OP_RELU_SQR_MUL"]),
    ("scale_f32", "unary.comp", &["OP_SCALE", "A_T=float", "D_T=float"]),
    ("sqr_f32", "unary.comp", &["OP_SQR", "A_T=float", "D_T=float"]),
    ("relu_f32", "unary.comp", &["OP_RELU", "A_T=float", "D_T=float"]),
    ("relu_sqr_f32", "unary.comp", &["OP_RELU_SQR", "A_T=float", "D_T=float"]),
    ("silu_f32", "unary.comp", &["OP_SILU", "A_T=float", "D_T=float"]),
    ("cpy_f32_f32", "unary.comp", &["A_T=float", "D_T=float"]),
    ("cpy_f32_f16", "unary.comp", &["A_T=float", "D_T=float16_t"]),
    ("cpy_f16_f32", "unary.comp", &["A_T=float16_t", "D_T=float"]),
    ("cpy_f16_f16", "unary.comp", &["A_T=float16_t", "D_T=float16_t"]),
    ("swiglu_f32", "glu.comp", &["OP_SWIGLU"]),
    ("reglu_f32", "glu.comp", &["OP_REGLU"]),
    ("rms_norm_f32", "rms_norm.comp", &[]),
    ("rms_norm_mul_f32", "rms_norm.comp", &["FUSE_MUL"]),
    ("mv_rms_norm_f32", "rms_norm_q8.comp", &[]),
    ("mv_rms_norm_mul_f32", "rms_norm_q8.comp", &["FUSE_MUL"]),
    ("mv_rms_norm_mul_q8_f32", "rms_norm_q8.comp", &["FUSE_MUL", "QUANT"]),
    ("mv_rms_norm_mul_q8_pre_f32", "rms_norm_q8.comp", &["FUSE_MUL", "QUANT", "PRE_MUL"]),
    ("mv_rms_norm_mul_q8_pre_relu2_f32", "rms_norm_q8.comp", &["FUSE_MUL", "QUANT", "PRE_MUL", "RELU2"]),
    ("soft_max_f32", "soft_max.comp", &["M_T=float"]),
    ("soft_max_f16", "soft_max.comp", &["M_T=float16_t"]),
    ("attn_decode_f16", "attn_decode.comp", &[]),
    ("attn_split_f16", "attn_split.comp", &[]),
    ("rope_f32", "rope.comp", &[]),
    ("rope_set_rows_f16_i64", "rope.comp", &["SET_ROWS"]),
    ("get_rows_f32", "get_rows.comp", &["A_T=float"]),
    ("get_rows_f16", "get_rows.comp", &["A_T=float16_t"]),
    ("set_rows_f32_i64", "set_rows.comp", &["D_T=float", "IDX64"]),
    ("set_rows_f16_i64", "set_rows.comp", &["D_T=float16_t", "IDX64"]),
    ("set_rows_f32_i32", "set_rows.comp", &["D_T=float"]),
    ("set_rows_f16_i32", "set_rows.comp", &["D_T=float16_t"]),
    // Training (backward and optimizer) ops: src/train.rs.
    ("step_f32", "unary.comp", &["OP_STEP", "A_T=float", "D_T=float"]),
    ("rope_back_f32", "rope.comp", &["ROPE_BACK"]),
    ("adamw_f32", "adamw.comp", &[]),
    ("out_prod_f32", "out_prod.comp", &["A_F32"]),
    ("out_prod_f16", "out_prod.comp", &["A_F16"]),
    ("out_prod_tq2", "out_prod.comp", &["A_TQ2"]),
    ("out_prod_tq1", "out_prod.comp", &["A_TQ1"]),
    // k <= 32 (a LoRA pair's rank): 4 x 4 outputs per invocation from global memory.
    ("prod_small_k_f32", "prod_small_k.comp", &[]),
    // One output dimension <= 32 (a LoRA pair's rank) and a longer k: 64 x 16 tiles.
    ("prod_thin_f32", "prod_thin.comp", &[]),
    // The earlier 4 x 4 layout, for A/B (TRIT_VULKAN_OUT_PROD_4X4=1).
    ("out_prod_f32_4x4", "out_prod.comp", &["A_F32", "MICRO4"]),
    ("out_prod_f16_4x4", "out_prod.comp", &["A_F16", "MICRO4"]),
    ("out_prod_tq2_4x4", "out_prod.comp", &["A_TQ2", "MICRO4"]),
    ("out_prod_tq1_4x4", "out_prod.comp", &["A_TQ1", "MICRO4"]),
    // Tensor-core OUT_PROD (VK_NV_cooperative_matrix) for frozen TQ2_0 / TQ1_0 / f16 weights,
    // with the per-column scales of its f32 operand; out_prod_{tq2,tq1,f16} are the twins.
    ("out_prod_tq2_cm", "out_prod_cm.comp", &["A_TQ2"]),
    ("out_prod_tq1_cm", "out_prod_cm.comp", &["A_TQ1"]),
    ("out_prod_f16_cm", "out_prod_cm.comp", &["A_F16"]),
    // f16 OUT_PROD for aligned operands: 128 x 64 tiles, 16-byte loads; `_emu` for tests.
    ("out_prod_f16v_cm", "out_prod_f16_cmv.comp", &[]),
    ("out_prod_f16v_emu", "out_prod_f16_cmv.comp", &[]),
    ("col_scale_f32", "col_scale.comp", &[]),
    // The ternary input gradient as int8 products on tensor cores (dY in two int8 parts per
    // column); `_n16`: 16 x 16 fragments; `_emu`: matrix instructions emulated (tests).
    ("dx_q8_tq2_cm", "dx_q8.comp", &["A_TQ2"]),
    ("dx_q8_tq2_n16_cm", "dx_q8.comp", &["A_TQ2", "NS=16"]),
    ("dx_q8_tq2_emu", "dx_q8.comp", &["A_TQ2"]),
    ("dx_q8_tq2_n16_emu", "dx_q8.comp", &["A_TQ2", "NS=16"]),
    ("dx_q8_tq1_cm", "dx_q8.comp", &["A_TQ1"]),
    ("dx_q8_tq1_n16_cm", "dx_q8.comp", &["A_TQ1", "NS=16"]),
    ("dx_q8_tq1_emu", "dx_q8.comp", &["A_TQ1"]),
    ("dx_q8_tq1_n16_emu", "dx_q8.comp", &["A_TQ1", "NS=16"]),
    // `dx_q8p`: B quantized beforehand, once per column and block column (`dx_q8_quant`).
    ("dx_q8p_tq2_cm", "dx_q8.comp", &["A_TQ2", "PREQ"]),
    ("dx_q8p_tq2_n16_cm", "dx_q8.comp", &["A_TQ2", "NS=16", "PREQ"]),
    ("dx_q8p_tq2_emu", "dx_q8.comp", &["A_TQ2", "PREQ"]),
    ("dx_q8p_tq2_n16_emu", "dx_q8.comp", &["A_TQ2", "NS=16", "PREQ"]),
    // TQ2_0 with dY quantized beforehand in 128-row tiles, two shared buffers (WIDE).
    ("dx_q8pw_tq2_cm", "dx_q8.comp", &["A_TQ2", "PREQ", "WIDE"]),
    ("dx_q8pw_tq2_n16_cm", "dx_q8.comp", &["A_TQ2", "NS=16", "PREQ", "WIDE"]),
    ("dx_q8pw_tq2_emu", "dx_q8.comp", &["A_TQ2", "PREQ", "WIDE"]),
    ("dx_q8pw_tq2_n16_emu", "dx_q8.comp", &["A_TQ2", "NS=16", "PREQ", "WIDE"]),
    ("dx_q8p_tq1_cm", "dx_q8.comp", &["A_TQ1", "PREQ"]),
    ("dx_q8p_tq1_n16_cm", "dx_q8.comp", &["A_TQ1", "NS=16", "PREQ"]),
    ("dx_q8p_tq1_emu", "dx_q8.comp", &["A_TQ1", "PREQ"]),
    ("dx_q8p_tq1_n16_emu", "dx_q8.comp", &["A_TQ1", "NS=16", "PREQ"]),
    ("dx_q8_quant", "dx_q8_scale.comp", &["QUANT"]),
    ("dx_q8_dgather_tq2", "dx_q8_scale.comp", &["D_GATHER", "A_TQ2"]),
    // With per-block-column flags: which block columns share block column 0's scales.
    ("dx_q8_dgatherf_tq2", "dx_q8_scale.comp", &["D_GATHER", "FLAGS", "A_TQ2"]),
    ("dx_q8_dgatherf_tq1", "dx_q8_scale.comp", &["D_GATHER", "FLAGS", "A_TQ1"]),
    ("dx_q8_dgather_tq1", "dx_q8_scale.comp", &["D_GATHER", "A_TQ1"]),
    ("dx_q8_colmax", "dx_q8_scale.comp", &[]),
    ("ce_rows_f32", "cross_entropy.comp", &["CE_ROWS"]),
    ("ce_sum_f32", "cross_entropy.comp", &["CE_SUM"]),
    ("ce_back_f32", "cross_entropy.comp", &["CE_BACK"]),
    ("rms_norm_back_f32", "row_back.comp", &["RMS_NORM_BACK"]),
    ("soft_max_back_f32", "row_back.comp", &["SOFT_MAX_BACK"]),
    ("repeat_back_f32", "grad_misc.comp", &["OP_REPEAT_BACK"]),
    ("get_rows_back_f32", "grad_misc.comp", &["OP_GET_ROWS_BACK"]),
    ("acc_add_f32", "grad_misc.comp", &["OP_ACC_ADD"]),
    ("split_sum_f32", "grad_misc.comp", &["OP_SPLIT_SUM"]),
    ("argmax_f32", "grad_misc.comp", &["OP_ARGMAX"]),
    ("count_equal_i32", "grad_misc.comp", &["OP_COUNT_EQUAL"]),
    // A decode mat-vec's weights into L2 beside the stage before it (src/matvec.rs).
    ("l2_prefetch", "l2_prefetch.comp", &[]),
    // Not a model op: the dispatch-boundary measurement of src/probe.rs.
    ("chain_probe", "chain_probe.comp", &[]),
    ("chain_probe_one", "chain_probe.comp", &["POLL_ONE"]),
    ("chain_probe_init", "chain_probe.comp", &["INIT"]),
    ("chain_probe_w", "chain_probe.comp", &["WG=1024"]),
    ("chain_probe_one_w", "chain_probe.comp", &["POLL_ONE", "WG=1024"]),
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let kernels = manifest.join("kernels");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", kernels.display());
    println!("cargo:rerun-if-env-changed=GLSLC");
    let glslc = std::env::var("GLSLC").unwrap_or_else(|_| "glslc".into());

    // Every `NORM` mat-vec also as a wide variant (`_w`, `WIDE`): 1024 invocations, 32 rows
    // per workgroup.
    let mut all: Vec<(String, &str, Vec<String>)> =
        VARIANTS.iter().map(|(n, s, d)| (n.to_string(), *s, d.iter().map(|x| x.to_string()).collect())).collect();
    for (name, src, defines) in VARIANTS.iter().filter(|v| v.2.contains(&"NORM")) {
        let mut d: Vec<String> =
            defines.iter().map(|x| if *x == "WG=512" { "WG=1024".to_string() } else { x.to_string() }).collect();
        d.push("WIDE".into());
        all.push((format!("{name}_w"), src, d.clone()));
        // Also with 16 or 8 lanes per row (`_w16`, `_w8`: 64 or 128 rows per workgroup, 8
        // words in flight per lane): fewer workgroups, so fewer norm prologues (gate and up:
        // 2 x 6912 rows for 2B-4T in one round of row groups instead of four).
        for lanes in [16, 8] {
            let mut n = d.clone();
            n.extend([format!("LANES={lanes}"), "U=8".to_string()]);
            all.push((format!("{name}_w{lanes}"), src, n));
        }
    }
    // glslc runs on all cores (some 160 variants).
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..threads {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((name, src, defines)) = all.get(i) else { break };
                compile(&glslc, &kernels, &out, name, src, defines);
            });
        }
    });
    let mut table = String::from("/// (variant, SPIR-V) for every compiled kernel; generated by build.rs.\n");
    table.push_str("pub(crate) static SPIRV: &[(&str, &[u8])] = &[\n");
    for (name, src, _) in &all {
        let spv = out.join(format!("{name}.spv"));
        table.push_str(&format!("    ({name:?}, include_bytes!({:?})),\n", spv.display().to_string()));
        // Kept next to the .spv for the MSL test.
        std::fs::write(out.join(format!("{name}.src")), format!("{src}\n")).unwrap();
    }
    table.push_str("];\n");
    std::fs::write(out.join("kernels.rs"), table).unwrap();
}

/// Compile variant `name` of `kernels/src` with `defines` to `out/name.spv`.
fn compile(glslc: &str, kernels: &std::path::Path, out: &std::path::Path, name: &str, src: &str, defines: &[String]) {
    let spv = out.join(format!("{name}.spv"));
    let mut cmd = Command::new(glslc);
    cmd.arg("-fshader-stage=compute").arg("--target-env=vulkan1.1").arg("-O").arg("-Werror");
    // `_cm` variants (VK_NV_cooperative_matrix) see COOPMAT; src/gpu.rs builds them only
    // on devices with the extension and the features their SPIR-V declares.
    if name.ends_with("_cm") {
        cmd.arg("-DCOOPMAT");
    }
    cmd.arg("-I").arg(kernels);
    for d in defines {
        cmd.arg(format!("-D{d}"));
    }
    cmd.arg(kernels.join(src)).arg("-o").arg(&spv);
    let output = match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!(
            "trit-vulkan: cannot run `{glslc}` ({e}). Install the shader compiler (`apt-get install glslc`, \
             see scripts/setup.sh) or build without the `vulkan` feature (--no-default-features)."
        ),
    };
    if !output.status.success() {
        panic!("glslc failed on {src} ({name}):\n{}", String::from_utf8_lossy(&output.stderr));
    }
}
