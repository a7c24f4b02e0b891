/*
 * Path rules: local, remote (the pod's) or not found. The CLI computes the rules once
 * (cli/files.ts) and the shim fetches them on its first file call (`fs.config`); after
 * that every decision is made here, so a local path never leaves the program.
 *
 * Precedence: --fs-local, --fs-remote, --fs-not-found (POSIX extended regexes on the
 * lexically normalised absolute path), then the pod-specific files (/etc/resolv.conf,
 * /etc/hosts, /etc/hostname, /etc/ssl/certs: remote), then the local defaults (system
 * trees, the kept trees: working directory, the program's directory, home; anything in
 * node_modules; shared libraries), then everything else is remote. Relative paths are
 * local unless relative to a descriptor that stands for a pod directory.
 */
#include "shim.h"

#include <fcntl.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RULES WIRE_MAX_RULES

/* The default rules, from protocol/shim-wire.ts (DEFAULT_PATH_RULES) through wire.h. */
static const char *const default_remote[] = WIRE_DEFAULT_REMOTE_FILES;
static const char *const default_local[] = WIRE_DEFAULT_LOCAL_TREES;
static const char *const default_local_dir_names[] = WIRE_DEFAULT_LOCAL_DIR_NAMES;

enum fs_mode { MODE_LOCAL, MODE_READ, MODE_WRITE };

static struct {
  enum fs_mode mode;
  regex_t local[MAX_RULES], remote[MAX_RULES], not_found[MAX_RULES];
  int nlocal, nremote, nnot_found;
  char *keep[WIRE_MAX_KEEP];
  int nkeep;
  char empty_dir[4096];
} rules;

static pthread_once_t rules_once = PTHREAD_ONCE_INIT;
static int rules_ready; /* 1 once loaded (or failed: then everything is local) */

static void add_regex(regex_t *set, int *n, const char *re) {
  if (*n >= MAX_RULES) return;
  int rc = regcomp(&set[*n], re, REG_EXTENDED | REG_NOSUB);
  if (rc != 0) {
    shim_log("fs rule \"%s\" is not a POSIX extended regex (%d); ignored", re, rc);
    return;
  }
  (*n)++;
}

static void config_field(const char *key, const char *value, void *arg) {
  (void)arg;
  if (strcmp(key, WIRE_KEY_MODE) == 0) {
    rules.mode = strcmp(value, WIRE_MODE_READ) == 0 ? MODE_READ : strcmp(value, WIRE_MODE_WRITE) == 0 ? MODE_WRITE : MODE_LOCAL;
  } else if (strcmp(key, WIRE_KEY_LOCAL) == 0) {
    add_regex(rules.local, &rules.nlocal, value);
  } else if (strcmp(key, WIRE_KEY_REMOTE) == 0) {
    add_regex(rules.remote, &rules.nremote, value);
  } else if (strcmp(key, WIRE_KEY_NOT_FOUND) == 0) {
    add_regex(rules.not_found, &rules.nnot_found, value);
  } else if (strcmp(key, WIRE_KEY_KEEP) == 0) {
    if (rules.nkeep < WIRE_MAX_KEEP && value[0] == '/' && strcmp(value, "/") != 0) {
      char *copy = strdup(value);
      size_t l = copy ? strlen(copy) : 0;
      while (l > 1 && copy[l - 1] == '/') copy[--l] = 0;
      if (copy) rules.keep[rules.nkeep++] = copy;
    }
  } else if (strcmp(key, WIRE_KEY_EMPTY_DIR) == 0) {
    if (strlen(value) < sizeof rules.empty_dir) strcpy(rules.empty_dir, value);
  }
}

static void load_rules(void) {
  rules.mode = MODE_LOCAL;
  if (fsproto_config(config_field, NULL) < 0) {
    rules.mode = MODE_LOCAL;
    shim_log("fs.config failed: every file is local");
  }
  if (!rules.empty_dir[0]) rules.mode = MODE_LOCAL;
  shim_log("files: mode %s, %d local / %d remote / %d not-found rules, %d kept trees",
           rules.mode == MODE_READ ? "read" : rules.mode == MODE_WRITE ? "write" : "local",
           rules.nlocal, rules.nremote, rules.nnot_found, rules.nkeep);
  __atomic_store_n(&rules_ready, 1, __ATOMIC_RELEASE);
}

static bool ensure_rules(void) {
  if (!__atomic_load_n(&rules_ready, __ATOMIC_ACQUIRE)) pthread_once(&rules_once, load_rules);
  return rules.mode != MODE_LOCAL;
}

SHIM_HIDDEN bool fs_write_mode(void) { return ensure_rules() && rules.mode == MODE_WRITE; }
SHIM_HIDDEN const char *fs_empty_dir(void) { return rules.empty_dir; }

/* `path` is `prefix` or below it. */
static bool under(const char *path, const char *prefix) {
  size_t n = strlen(prefix);
  return strncmp(path, prefix, n) == 0 && (path[n] == 0 || path[n] == '/');
}

/* Lexical normalisation of an absolute path: no //, /./ or /../ (the pod resolves the
 * real thing; this is only what the rules look at). */
SHIM_HIDDEN void fs_normalise(const char *in, char *out, size_t cap) {
  size_t len = 0;
  out[len++] = '/';
  const char *p = in;
  while (*p) {
    while (*p == '/') p++;
    const char *start = p;
    while (*p && *p != '/') p++;
    size_t n = (size_t)(p - start);
    if (n == 0 || (n == 1 && start[0] == '.')) continue;
    if (n == 2 && start[0] == '.' && start[1] == '.') {
      while (len > 1 && out[len - 1] != '/') len--;
      if (len > 1) len--;
      continue;
    }
    if (len + n + 2 >= cap) break;
    if (len > 1) out[len++] = '/';
    memcpy(out + len, start, n);
    len += n;
  }
  out[len] = 0;
}

/* The path goes through a directory named `name` (or is one). */
static bool through_dir(const char *path, const char *name) {
  size_t n = strlen(name);
  for (const char *p = strstr(path, name); p; p = strstr(p + 1, name))
    if (p > path && p[-1] == '/' && (p[n] == '/' || p[n] == 0)) return true;
  return false;
}

static bool any_match(regex_t *set, int n, const char *path) {
  for (int i = 0; i < n; i++)
    if (regexec(&set[i], path, 0, NULL, 0) == 0) return true;
  return false;
}

static bool shared_library(const char *path) {
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  const char *so = strstr(base, ".so");
  if (!so || so == base) return false;
  const char *p = so + 3;
  while (*p == '.' || (*p >= '0' && *p <= '9')) p++;
  return *p == 0;
}

static enum fs_route decide(const char *norm) {
  if (any_match(rules.local, rules.nlocal, norm)) return FS_LOCAL;
  if (any_match(rules.remote, rules.nremote, norm)) return FS_REMOTE;
  if (any_match(rules.not_found, rules.nnot_found, norm)) return FS_NOT_FOUND;
  if (strcmp(norm, "/") == 0) return FS_LOCAL;
  for (size_t i = 0; i < sizeof default_remote / sizeof default_remote[0]; i++)
    if (under(norm, default_remote[i])) return FS_REMOTE;
  for (size_t i = 0; i < sizeof default_local / sizeof default_local[0]; i++)
    if (under(norm, default_local[i])) return FS_LOCAL;
  for (int i = 0; i < rules.nkeep; i++)
    if (under(norm, rules.keep[i])) return FS_LOCAL;
  for (size_t i = 0; i < sizeof default_local_dir_names / sizeof default_local_dir_names[0]; i++)
    if (through_dir(norm, default_local_dir_names[i])) return FS_LOCAL;
  if (shared_library(norm)) return FS_LOCAL;
  return FS_REMOTE;
}

SHIM_HIDDEN enum fs_route fs_route_at(int dirfd, const char *path, char *out, size_t cap) {
  if (!path || !path[0]) return FS_LOCAL;
  if (!ensure_rules()) return FS_LOCAL;
  char joined[4096];
  const char *abs = path;
  if (path[0] != '/') {
    /* Relative: local, unless relative to a descriptor standing for a pod directory. */
    if (dirfd == AT_FDCWD || dirfd < 0) return FS_LOCAL;
    bool is_dir = false, copy = false;
    char base[4096];
    if (!rfile_info(dirfd, base, sizeof base, NULL, &is_dir, &copy) || !is_dir) return FS_LOCAL;
    size_t bl = strlen(base), pl = strlen(path);
    if (bl + pl + 2 > sizeof joined) return FS_LOCAL;
    memcpy(joined, base, bl);
    joined[bl] = '/';
    memcpy(joined + bl + 1, path, pl + 1);
    abs = joined;
    char norm[4096];
    fs_normalise(abs, norm, sizeof norm);
    if (strlen(abs) + 1 > cap) return FS_LOCAL;
    strcpy(out, abs);
    /* Below a pod directory the program already chose the pod: only explicit rules apply. */
    if (any_match(rules.local, rules.nlocal, norm)) return FS_LOCAL;
    if (any_match(rules.not_found, rules.nnot_found, norm)) return FS_NOT_FOUND;
    return FS_REMOTE;
  }
  char norm[4096];
  fs_normalise(abs, norm, sizeof norm);
  enum fs_route r = decide(norm);
  if (r == FS_LOCAL) {
    /* "/data/.." is walked where "/data" is: in the pod (whose "/" is the pod's root). */
    const char *dots = abs;
    while ((dots = strstr(dots, "/..")) && dots[3] != '/' && dots[3] != 0) dots += 3;
    if (dots) {
      char prefix[4096];
      size_t n = (size_t)(dots - abs);
      if (n > 0 && n < sizeof prefix) {
        memcpy(prefix, abs, n);
        prefix[n] = 0;
        fs_normalise(prefix, norm, sizeof norm);
        if (decide(norm) == FS_REMOTE) r = FS_REMOTE;
      }
    }
  }
  if (r == FS_REMOTE) {
    if (strlen(abs) + 1 > cap) return FS_LOCAL;
    strcpy(out, abs);
  }
  return r;
}
