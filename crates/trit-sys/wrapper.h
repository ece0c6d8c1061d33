// Headers of the pinned llama.cpp that trit binds (see build.rs).
#include "llama.h"
#include "ggml.h"
#include "ggml-cpu.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-backend-impl.h"
#include "ggml-opt.h"
#include "gguf.h"
