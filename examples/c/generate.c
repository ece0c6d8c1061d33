/* Greedy generation through libtrit's llama.h API (the pinned llama.cpp), plus trit.h.
 *
 *   cc examples/c/generate.c -I crates/trit-capi/include -I <llama.cpp>/include \
 *      -I <llama.cpp>/ggml/include -L target/release -ltrit -Wl,-rpath,$PWD/target/release
 *   ./a.out model.gguf "The capital of France is" 16
 *
 * Prints the generated token ids on the first line and the text on the second; the third
 * line is trit_generate()'s text for the same prompt, the fourth its error for a NULL model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"
#include "trit.h"

int main(int argc, char ** argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL PROMPT [N_PREDICT]\n", argv[0]);
        return 2;
    }
    const char * path = argv[1];
    const char * prompt = argv[2];
    const int n_predict = argc > 3 ? atoi(argv[3]) : 16;
    fprintf(stderr, "%s, llama.cpp %s\n", trit_version(), trit_llama_cpp_pin());

    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model * model = llama_model_load_from_file(path, mp);
    if (model == NULL) {
        fprintf(stderr, "could not load %s\n", path);
        return 1;
    }
    const struct llama_vocab * vocab = llama_model_get_vocab(model);

    const int n_prompt = -llama_tokenize(vocab, prompt, (int32_t) strlen(prompt), NULL, 0, true, true);
    llama_token * tokens = malloc(sizeof(llama_token) * (size_t) n_prompt);
    if (llama_tokenize(vocab, prompt, (int32_t) strlen(prompt), tokens, n_prompt, true, true) < 0) {
        fprintf(stderr, "tokenize failed\n");
        return 1;
    }

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 256;
    cp.n_batch = 256;
    cp.n_threads = 2;
    cp.n_threads_batch = 2;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    if (ctx == NULL) {
        fprintf(stderr, "could not create a context\n");
        return 1;
    }
    struct llama_sampler * smpl = llama_sampler_chain_init(llama_sampler_chain_default_params());
    llama_sampler_chain_add(smpl, llama_sampler_init_greedy());

    char * text = calloc(1, 16 * (size_t) n_predict + 1);
    size_t text_len = 0;
    struct llama_batch batch = llama_batch_get_one(tokens, n_prompt);
    llama_token next;
    for (int i = 0; i < n_predict; i++) {
        if (llama_decode(ctx, batch) != 0) {
            fprintf(stderr, "decode failed\n");
            return 1;
        }
        next = llama_sampler_sample(smpl, ctx, -1);
        printf("%s%d", i ? " " : "", next);
        char piece[64];
        const int n = llama_token_to_piece(vocab, next, piece, sizeof piece, 0, false);
        if (n > 0 && text_len + (size_t) n <= 16 * (size_t) n_predict) {
            memcpy(text + text_len, piece, (size_t) n);
            text_len += (size_t) n;
        }
        batch = llama_batch_get_one(&next, 1);
    }
    printf("\n");
    fwrite(text, 1, text_len, stdout);
    printf("\n");

    char out[4096];
    const int r = trit_generate(path, prompt, n_predict, out, sizeof out);
    printf("%s\n", r >= 0 ? out : "(trit_generate failed)");
    const int e = trit_generate(NULL, prompt, 1, out, sizeof out);
    printf("%d %s\n", e, out);

    llama_sampler_free(smpl);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    free(tokens);
    free(text);
    return 0;
}
