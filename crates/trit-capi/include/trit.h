/* trit.h: what libtrit adds to llama.h. libtrit also exports llama.h's whole C API (the
 * pinned llama.cpp, see trit_llama_cpp_pin), so include "llama.h" for everything else. */
#ifndef TRIT_H
#define TRIT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* "trit VERSION"; static storage. */
const char * trit_version(void);

/* The llama.cpp pin libtrit was built from; static storage. */
const char * trit_llama_cpp_pin(void);

/* Greedy completion in one call: load model_path, generate n_predict tokens after prompt
 * (end-of-generation tokens included), write the NUL-terminated text into out.
 * Returns the text's length (cut to out_size - 1 in out if longer), or -1 with the error
 * message in out. Never aborts on bad input: errors (and internal panics) become -1. */
int trit_generate(const char * model_path, const char * prompt, int n_predict, char * out, size_t out_size);

#ifdef __cplusplus
}
#endif

#endif /* TRIT_H */
