/* Embeds the texts given as arguments and prints one JSON array per text.
 *
 *   cargo build --release -p ember-capi
 *   cc -O2 -Icrates/ember-capi/include crates/ember-capi/examples/embed.c \
 *      target/release/libember_capi.a -lpthread -ldl -lm -o embed
 *   ./embed MODEL_DIR "A cat sits on the mat." "A dog plays."
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ember.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL_DIR [TEXT...]\n", argv[0]);
        return 2;
    }
    EmberEmbedder *embedder = ember_load(argv[1], 2, 0);
    if (!embedder) {
        fprintf(stderr, "ember_load: %s\n", ember_last_error());
        return 1;
    }
    size_t n = (size_t)(argc - 2), dim = ember_dim(embedder);
    /* calloc(0, ...) may return NULL: allocate at least one element. */
    size_t rows = n > 0 ? n : 1, values = rows * (dim > 0 ? dim : 1);
    const char **texts = calloc(rows, sizeof *texts);
    size_t *lens = calloc(rows, sizeof *lens);
    float *out = calloc(values, sizeof *out);
    if (!texts || !lens || !out) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        texts[i] = argv[i + 2];
        lens[i] = strlen(argv[i + 2]);
    }
    if (ember_encode(embedder, texts, lens, n, out, n * dim) != 0) {
        fprintf(stderr, "ember_encode: %s\n", ember_last_error());
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        printf("[");
        for (size_t j = 0; j < dim; j++) {
            printf(j ? ",%.9g" : "%.9g", out[i * dim + j]);
        }
        printf("]\n");
    }
    free(out);
    free(lens);
    free(texts);
    ember_free(embedder);
    return 0;
}
