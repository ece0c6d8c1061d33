// trit: the one place that touches llama.cpp's internal LoRA adapter structure.
//
// `llama_adapter_lora` is opaque in llama.h; its A/B tensors live in the internal
// `ab_map` (src/llama-adapter.h). Training needs them: to mark them as ggml-opt
// parameters and to read them back for saving. Every entry point is noexcept and
// reports failure by return value, so no C++ exception reaches Rust.

#include "llama-adapter.h"
#include "ggml.h"

#include <cstdint>

extern "C" {

// Number of (A, B) pairs in the adapter, or -1 on a null adapter.
int32_t trit_lora_n_weights(const llama_adapter_lora * adapter) noexcept {
    if (adapter == nullptr) {
        return -1;
    }
    return (int32_t) adapter->ab_map.size();
}

// The i-th pair in the map's iteration order (stable while the adapter is unchanged):
// the base tensor name and the A and B tensors. Returns 0 on success, -1 when out of range.
int32_t trit_lora_weight(const llama_adapter_lora * adapter, int32_t i, const char ** name, ggml_tensor ** a,
                         ggml_tensor ** b) noexcept {
    if (adapter == nullptr || i < 0 || name == nullptr || a == nullptr || b == nullptr) {
        return -1;
    }
    int32_t k = 0;
    for (const auto & it : adapter->ab_map) {
        if (k == i) {
            *name = it.first.c_str();
            *a    = it.second.a;
            *b    = it.second.b;
            return 0;
        }
        ++k;
    }
    return -1;
}

// Flag every A and B tensor as a trainable parameter (GGML_TENSOR_FLAG_PARAM). Returns the
// number of tensors flagged, or -1 if a tensor is not an F32 leaf (ggml-opt could not train it).
int32_t trit_lora_set_trainable(llama_adapter_lora * adapter) noexcept {
    if (adapter == nullptr) {
        return -1;
    }
    for (const auto & it : adapter->ab_map) {
        for (ggml_tensor * t : {it.second.a, it.second.b}) {
            if (t == nullptr || t->type != GGML_TYPE_F32 || t->op != GGML_OP_NONE) {
                return -1;
            }
        }
    }
    int32_t n = 0;
    for (auto & it : adapter->ab_map) {
        ggml_set_param(it.second.a);
        ggml_set_param(it.second.b);
        n += 2;
    }
    return n;
}

} // extern "C"
