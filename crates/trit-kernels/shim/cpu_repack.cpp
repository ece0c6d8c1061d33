// trit: a CPU weight buffer type ("TRIT_REPACK") that holds TQ1_0 weights re-encoded at load
// time in TQ2_0's 2-bit layout, so the decode mat-vecs stream 2-bit codes (memory-bound, as
// for TQ2_0) instead of decoding base-3 digits (compute-bound).
//
// It is one of ggml-cpu's "extra" buffer types, as ggml's own CPU_REPACK is: llama.cpp's
// loader offers each CPU weight to the extra buffer types first, asking `supports_op` with
// the weight's first consumer (a MUL_MAT for the projections) and a zero-size buffer of the
// type. The tensors keep their GGML_TYPE_TQ1_0 type, shape and strides; only the bytes in
// this buffer differ:
// * set_tensor re-encodes TQ1_0 blocks (54 bytes) to TQ2_0 blocks (66 bytes), get_tensor
//   encodes them back (ggml's canonical TQ1_0 bytes of the same weights), so anything that
//   copies the tensor out (the scheduler, a GPU upload, llama.cpp's state code) sees TQ1_0;
// * is_host is false, so nothing reads `data` as TQ1_0 directly: the scheduler copies such
//   weights through get_tensor, and ops other than MUL_MAT on them are refused;
// * the MUL_MAT itself runs through ggml's normal path (get_tensor_traits returns nothing)
//   into trit's MUL_MAT hook (vendor/patches/0005), which recognises the buffer type
//   (`trit_cpu_repack_buffer_type`) and runs the TQ2_0 kernels on the re-encoded rows. (ggml
//   skips the hook only in its reference mode, `ggml_backend_cpu_set_use_ref`, which only
//   ggml's own op tests set; trit never does.)
// The conversions are Rust functions registered by `trit_cpu_repack_register`. Everything
// here is noexcept: no C++ exception reaches Rust.

#include "ggml-backend-impl.h"
#include "ggml-cpu.h"
#include "ggml.h"
#include "traits.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>

extern "C" {
// Convert `n_blocks` blocks from `src` to `dst` (TQ1_0 -> TQ2_0, or back).
typedef void (*trit_repack_blocks_t)(const void * src, void * dst, size_t n_blocks);
}

namespace {

constexpr size_t TQ1_BYTES = 54;
constexpr size_t TQ2_BYTES = 66;
constexpr int64_t QK       = 256;

std::atomic<trit_repack_blocks_t> g_to_tq2{nullptr};
std::atomic<trit_repack_blocks_t> g_to_tq1{nullptr};
// Whether the loader may place new weights here (trit's kernels installed). Weights already
// placed are served whatever this says.
std::atomic<bool> g_accept{false};

ggml_backend_buffer_type_t repack_buft();

bool is_tq1_matrix(const ggml_tensor * w) {
    return w->type == GGML_TYPE_TQ1_0 && w->ne[0] % QK == 0 && w->ne[2] == 1 && w->ne[3] == 1 &&
           w->nb[0] == TQ1_BYTES && w->nb[1] == (size_t) (w->ne[0] / QK) * TQ1_BYTES && w->view_src == nullptr;
}

// Bytes of `size` TQ1_0 bytes from `offset` in the re-encoded layout; false unless both are
// whole blocks.
bool to_tq2_span(size_t offset, size_t size, size_t & off2, size_t & n_blocks) {
    if (offset % TQ1_BYTES != 0 || size % TQ1_BYTES != 0) {
        return false;
    }
    off2     = offset / TQ1_BYTES * TQ2_BYTES;
    n_blocks = size / TQ1_BYTES;
    return true;
}

void buffer_set_tensor(ggml_backend_buffer_t, ggml_tensor * t, const void * data, size_t offset, size_t size) noexcept {
    size_t off2 = 0, n = 0;
    trit_repack_blocks_t f = g_to_tq2.load();
    if (!is_tq1_matrix(t) || f == nullptr || !to_tq2_span(offset, size, off2, n)) {
        GGML_ABORT("trit: TRIT_REPACK set_tensor: %s is not a whole-block TQ1_0 matrix write", t->name);
    }
    f(data, (char *) t->data + off2, n);
}

void buffer_get_tensor(ggml_backend_buffer_t, const ggml_tensor * t, void * data, size_t offset, size_t size) noexcept {
    size_t off2 = 0, n = 0;
    trit_repack_blocks_t f = g_to_tq1.load();
    if (!is_tq1_matrix(t) || f == nullptr || !to_tq2_span(offset, size, off2, n)) {
        GGML_ABORT("trit: TRIT_REPACK get_tensor: %s is not a whole-block TQ1_0 matrix read", t->name);
    }
    f((const char *) t->data + off2, data, n);
}

const char * buft_name(ggml_backend_buffer_type_t) noexcept {
    return "TRIT_REPACK";
}

ggml_backend_buffer_t buft_alloc(ggml_backend_buffer_type_t buft, size_t size) noexcept {
    ggml_backend_buffer_t b = ggml_backend_buft_alloc_buffer(ggml_backend_cpu_buffer_type(), size);
    if (b == nullptr) {
        return nullptr;
    }
    b->buft                 = buft;
    b->iface.set_tensor     = buffer_set_tensor;
    b->iface.get_tensor     = buffer_get_tensor;
    b->iface.set_tensor_2d  = nullptr;
    b->iface.get_tensor_2d  = nullptr;
    b->iface.memset_tensor  = nullptr;
    b->iface.cpy_tensor     = nullptr;
    return b;
}

size_t buft_alignment(ggml_backend_buffer_type_t) noexcept {
    return ggml_backend_buft_get_alignment(ggml_backend_cpu_buffer_type());
}

size_t buft_alloc_size(ggml_backend_buffer_type_t, const ggml_tensor * t) noexcept {
    if (t->type == GGML_TYPE_TQ1_0) {
        return (size_t) (ggml_nbytes(t) / TQ1_BYTES) * TQ2_BYTES;
    }
    return ggml_nbytes(t);
}

class extra_type : public ggml::cpu::extra_buffer_type {
  public:
    bool supports_op(ggml_backend_dev_t, const ggml_tensor * op) override {
        if (op->op != GGML_OP_MUL_MAT) {
            return false;
        }
        const ggml_tensor * w = op->src[0];
        const ggml_tensor * x = op->src[1];
        if (w->buffer == nullptr || w->buffer->buft != repack_buft() || !is_tq1_matrix(w)) {
            return false;
        }
        if (x->type != GGML_TYPE_F32 || x->ne[2] != 1 || x->ne[3] != 1 ||
            (x->buffer != nullptr && !ggml_backend_buft_is_host(x->buffer->buft))) {
            return false;
        }
        // llama.cpp's loader asks with an unallocated weight (a zero-size buffer): accept new
        // weights only while trit's kernels are installed.
        return w->data != nullptr || g_accept.load();
    }

    ggml::cpu::tensor_traits * get_tensor_traits(const ggml_tensor *) override { return nullptr; }
};

ggml_backend_buffer_type_t repack_buft() {
    static extra_type                      extra;
    static struct ggml_backend_buffer_type buft = {
        /* .iface = */ {
            /* .get_name         = */ buft_name,
            /* .alloc_buffer     = */ buft_alloc,
            /* .alloc_buffer_n   = */ nullptr,
            /* .get_alignment    = */ buft_alignment,
            /* .get_max_size     = */ nullptr,
            /* .get_alloc_size   = */ buft_alloc_size,
            /* .get_alloc_size_n = */ nullptr,
            /* .is_host          = */ nullptr,
        },
        /* .device  = */ ggml_backend_reg_dev_get(ggml_backend_cpu_reg(), 0),
        /* .context = */ &extra,
    };
    return &buft;
}

}  // namespace

extern "C" {

ggml_backend_buffer_type_t trit_cpu_repack_buffer_type(void) noexcept {
    return repack_buft();
}

// Register the conversions and add the buffer type to ggml-cpu's extra buffer types (once).
// The CPU device copies that list the first time a model is loaded, so this must run
// before: returns false if the list was already handed out without this type (nothing is
// repacked then).
bool trit_cpu_repack_register(trit_repack_blocks_t to_tq2, trit_repack_blocks_t to_tq1) noexcept {
    g_to_tq2.store(to_tq2);
    g_to_tq1.store(to_tq1);
    auto & list = ggml_backend_cpu_get_extra_buffer_types();
    ggml_backend_buffer_type_t b = repack_buft();
    if (std::find(list.begin(), list.end(), b) == list.end()) {
        list.push_back(b);
    }
    // What the loader sees: the device's own copy of the list.
    ggml_backend_dev_t cpu = ggml_backend_reg_dev_get(ggml_backend_cpu_reg(), 0);
    auto get = (ggml_backend_dev_get_extra_bufts_t) ggml_backend_reg_get_proc_address(
        ggml_backend_cpu_reg(), "ggml_backend_dev_get_extra_bufts");
    if (get == nullptr) {
        return false;
    }
    for (ggml_backend_buffer_type_t * p = get(cpu); p != nullptr && *p != nullptr; ++p) {
        if (*p == b) {
            return true;
        }
    }
    return false;
}

// Accept new weights at load (trit's kernels installed) or not (ggml's).
void trit_cpu_repack_set_accept(bool accept) noexcept {
    g_accept.store(accept);
}

}  // extern "C"
