/* Convert, generate, fine-tune a LoRA adapter and use it, all from C through libtrit:
 * trit.h for conversion and training, llama.h (the pinned llama.cpp) for everything else.
 *
 *   cc examples/c/finetune.c -I crates/trit-capi/include -I <llama.cpp>/include \
 *      -I <llama.cpp>/ggml/include -L target/release -ltrit -Wl,-rpath,$PWD/target/release -lm
 *   ./a.out tests/fixtures/bitnet-2b4t-bf16 train.txt /tmp/out 8
 *
 * HF_DIR is a Hugging Face BitNet checkpoint, DATA plain text or JSONL (see trit finetune),
 * OUT_DIR an existing directory that receives model.gguf and adapter.gguf. Prints one line per
 * stage; the lines start with a keyword (converted, base, windows, step, saved, nll, tuned,
 * error) so that a program can parse them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"
#include "trit.h"

static const char * PROMPT = "The quick brown fox";

/* Greedy continuation of PROMPT: prints the token ids after the label. */
static int greedy(struct llama_model * model, struct llama_adapter_lora * adapter, const char * label, int n) {
    const struct llama_vocab * vocab = llama_model_get_vocab(model);
    llama_token tokens[64];
    const int n_prompt = llama_tokenize(vocab, PROMPT, (int32_t) strlen(PROMPT), tokens, 64, true, true);
    if (n_prompt < 1) {
        return -1;
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 256;
    cp.n_batch = 256;
    cp.n_threads = 2;
    cp.n_threads_batch = 2;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    if (ctx == NULL) {
        return -1;
    }
    float scale = 1.0f;
    if (adapter != NULL && llama_set_adapters_lora(ctx, &adapter, 1, &scale) != 0) {
        llama_free(ctx);
        return -1;
    }
    struct llama_sampler * smpl = llama_sampler_chain_init(llama_sampler_chain_default_params());
    llama_sampler_chain_add(smpl, llama_sampler_init_greedy());
    struct llama_batch batch = llama_batch_get_one(tokens, n_prompt);
    llama_token next;
    printf("%s", label);
    for (int i = 0; i < n; i++) {
        if (llama_decode(ctx, batch) != 0) {
            break;
        }
        next = llama_sampler_sample(smpl, ctx, -1);
        printf(" %d", next);
        batch = llama_batch_get_one(&next, 1);
    }
    printf("\n");
    llama_sampler_free(smpl);
    llama_free(ctx);
    return 0;
}

/* Mean next-token negative log-likelihood of text, with or without the adapter. */
static double mean_nll(struct llama_model * model, struct llama_adapter_lora * adapter, const char * text) {
    const struct llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    llama_token tokens[256];
    const int n = llama_tokenize(vocab, text, (int32_t) strlen(text), tokens, 256, true, false);
    if (n < 2) {
        return NAN;
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 256;
    cp.n_batch = 256;
    cp.n_ubatch = 256;
    cp.n_threads = 2;
    cp.n_threads_batch = 2;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    if (ctx == NULL) {
        return NAN;
    }
    float scale = 1.0f;
    if (adapter != NULL && llama_set_adapters_lora(ctx, &adapter, 1, &scale) != 0) {
        llama_free(ctx);
        return NAN;
    }
    struct llama_batch batch = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        batch.token[i] = tokens[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;
    }
    batch.n_tokens = n;
    double sum = NAN;
    if (llama_decode(ctx, batch) == 0) {
        sum = 0.0;
        for (int i = 0; i + 1 < n; i++) {
            const float * logits = llama_get_logits_ith(ctx, i);
            double max = logits[0];
            for (int v = 1; v < n_vocab; v++) {
                max = logits[v] > max ? logits[v] : max;
            }
            double z = 0.0;
            for (int v = 0; v < n_vocab; v++) {
                z += exp(logits[v] - max);
            }
            sum += max + log(z) - logits[tokens[i + 1]];
        }
        sum /= n - 1;
    }
    llama_batch_free(batch);
    llama_free(ctx);
    return sum;
}

/* The first line of the data file (at most 200 bytes), for the NLL comparison: with plain-text
 * data it is text the adapter was trained on (with JSONL it is the raw JSON line). */
static void first_line(const char * path, char * buf, size_t size) {
    buf[0] = 0;
    FILE * f = fopen(path, "r");
    if (f == NULL) {
        return;
    }
    if (fgets(buf, (int) size, f) != NULL) {
        buf[strcspn(buf, "\n")] = 0;
        if (strlen(buf) > 200) {
            buf[200] = 0;
        }
    }
    fclose(f);
}

int main(int argc, char ** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s HF_DIR DATA OUT_DIR [STEPS]\n", argv[0]);
        return 2;
    }
    const char * hf_dir = argv[1];
    const char * data = argv[2];
    const char * out_dir = argv[3];
    const int steps = argc > 4 ? atoi(argv[4]) : 8;
    char model_path[4096], adapter_path[4096];
    snprintf(model_path, sizeof model_path, "%s/model.gguf", out_dir);
    snprintf(adapter_path, sizeof adapter_path, "%s/adapter.gguf", out_dir);

    /* 1. Hugging Face checkpoint -> GGUF (ternary weights as TQ2_0). */
    if (trit_convert(hf_dir, model_path, TRIT_WEIGHT_TQ2_0, TRIT_EMBED_F16) != TRIT_OK) {
        fprintf(stderr, "convert: %s\n", trit_last_error());
        return 1;
    }
    printf("converted %s\n", model_path);

    /* 2. Generate with llama.h. trit_init() is llama_backend_init() plus trit's own backends
     *    (the Rust Vulkan one, where there is a Vulkan GPU). */
    if (trit_init() != TRIT_OK) {
        fprintf(stderr, "init: %s\n", trit_last_error());
        return 1;
    }
    struct llama_model * model = llama_model_load_from_file(model_path, llama_model_default_params());
    if (model == NULL) {
        fprintf(stderr, "could not load %s\n", model_path);
        return 1;
    }
    greedy(model, NULL, "base", 8);

    /* 3. Train a LoRA adapter for a few steps, then save it. */
    trit_train_params p = trit_train_default_params();
    p.n_ctx = 256;
    p.n_threads = 2;
    p.learning_rate = 2e-3f;
    p.weight_decay = 0.0f;
    trit_trainer * trainer = NULL;
    if (trit_train_start(model_path, data, &p, &trainer) != TRIT_OK) {
        fprintf(stderr, "train_start: %s\n", trit_last_error());
        return 1;
    }
    printf("windows %lld\n", (long long) trit_train_n_windows(trainer));
    for (int i = 0; i < steps; i++) {
        double loss = 0.0;
        if (trit_train_step(trainer, &loss) != TRIT_OK) {
            fprintf(stderr, "train_step: %s\n", trit_last_error());
            return 1;
        }
        printf("step %lld loss %.6f\n", (long long) trit_train_n_steps(trainer), loss);
        fflush(stdout);
    }
    if (trit_train_save(trainer, adapter_path) != TRIT_OK) {
        fprintf(stderr, "train_save: %s\n", trit_last_error());
        return 1;
    }
    trit_train_free(trainer);
    printf("saved %s\n", adapter_path);

    /* 4. Load the adapter with llama.cpp's own loader: the training text is now likelier. */
    struct llama_adapter_lora * adapter = llama_adapter_lora_init(model, adapter_path);
    if (adapter == NULL) {
        fprintf(stderr, "llama_adapter_lora_init could not load %s\n", adapter_path);
        return 1;
    }
    char text[256];
    first_line(data, text, sizeof text);
    printf("nll base %.6f tuned %.6f\n", mean_nll(model, NULL, text), mean_nll(model, adapter, text));
    greedy(model, adapter, "tuned", 8);

    /* 5. Bad arguments are errors with a message, never a crash. */
    trit_trainer * none = NULL;
    int rc = trit_train_start(NULL, data, NULL, &none);
    printf("error %d %s\n", rc, trit_last_error());
    rc = trit_train_step(NULL, NULL);
    printf("error %d %s\n", rc, trit_last_error());
    rc = trit_convert(hf_dir, model_path, 42, TRIT_EMBED_F16);
    printf("error %d %s\n", rc, trit_last_error());
    rc = trit_train_start(model_path, "/nonexistent/data.txt", &p, &none);
    printf("error %d %s\n", rc, trit_last_error());
    trit_train_free(NULL);

    llama_adapter_lora_free(adapter);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
