/*
 * Seed frames for the fuzzers: sample replies of every shape that the TypeScript side
 * writes from protocol/shim-wire.ts (node dist/protocol/shim-wire-gen.js seeds DIR), one
 * file per sample, named <op>.<shape>.mp. The fuzzers replay them first (each must be
 * accepted by its op's parser as the shape it names: the contract between the two sides),
 * then mutate them.
 */
#ifndef TSMIRROR_TEST_SEEDS_H
#define TSMIRROR_TEST_SEEDS_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct seed {
  char name[128];
  uint8_t *data;
  size_t len;
};

/* Loads DIR/<name>.mp files whose name `want` accepts (and that fit in cap bytes). */
static size_t load_seeds(const char *dir, int (*want)(const char *name), size_t cap,
                         struct seed **out) {
  *out = NULL;
  DIR *d = opendir(dir);
  if (!d) {
    fprintf(stderr, "cannot open seed dir %s\n", dir);
    exit(2);
  }
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t l = strlen(e->d_name);
    if (l < 4 || l >= sizeof(*out)->name || strcmp(e->d_name + l - 3, ".mp") != 0) continue;
    if (!want(e->d_name)) continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    FILE *f = fopen(path, "rb");
    if (!f) continue;
    uint8_t *data = malloc(cap);
    size_t len = fread(data, 1, cap, f);
    int more = fgetc(f) != EOF;
    fclose(f);
    if (more || len == 0) {
      fprintf(stderr, "seed %s is empty or larger than %zu bytes\n", e->d_name, cap);
      exit(2);
    }
    *out = realloc(*out, (n + 1) * sizeof **out);
    struct seed *s = &(*out)[n++];
    memcpy(s->name, e->d_name, l - 3);
    s->name[l - 3] = 0;
    s->data = data;
    s->len = len;
  }
  closedir(d);
  return n;
}

static int starts_with(const char *s, const char *prefix) {
  return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The shape a seed is named after: "<op>.<shape>" or "<op>.<shape>-min". */
static int shape_is(const char *name, const char *shape) {
  const char *dot = strrchr(name, '.');
  if (!dot) return 0;
  size_t n = strlen(shape);
  return strncmp(dot + 1, shape, n) == 0 && (dot[1 + n] == 0 || dot[1 + n] == '-');
}

/* One mutation pass over input (1-4 byte changes or a truncation). */
static void mutate(uint8_t *input, size_t *input_len) {
  int flips = 1 + rand() % 4;
  for (int f = 0; f < flips && *input_len > 0; f++) {
    size_t at = (size_t)rand() % *input_len;
    switch (rand() % 3) {
      case 0: input[at] = (uint8_t)rand(); break;
      case 1: *input_len = at + 1; break; /* truncate */
      case 2: input[at] ^= (uint8_t)(1u << (rand() % 8)); break;
    }
  }
}

#endif
