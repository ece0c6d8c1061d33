// Where a ternary weight row's blocks lie in trit's buffers (src/weight_store.rs), for kernels
// whose binding 0 is the weight and pc.a_ne.x its row length. Included after common.glsl.
// A_TQ2 (TQ2_0, and TQ1_0 held as TQ2_0): a row is split, its blocks' 64 code bytes one
// after another (16-byte aligned where the row is), then the blocks' f16 scales; rows are
// padded to 16 bytes. A_TQ1 (TQ1_0 as stored): ggml's 54-byte blocks, the scale at byte 52.
#if defined(A_TQ2)
#define TQ_CODE_STEP 64u // bytes from one block's codes to the next block's
uint tq_scale_at(uint row, uint blk) { return row + (pc.a_ne.x / 256u) * 64u + 2u * blk; }
#elif defined(A_TQ1)
#define TQ_CODE_STEP 54u
uint tq_scale_at(uint row, uint blk) { return row + blk * 54u + 52u; }
#endif
