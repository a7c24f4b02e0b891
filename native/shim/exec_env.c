/*
 * The environment of an exec'd program (exec.c's hooks): LD_PRELOAD and the session
 * variables are put back into an environment that the program scrubbed (`env -i curl
 * ...`), so the next program is intercepted too. The fixed copy is built in mmap'd memory
 * (map_bytes, exec.h).
 */
#include "exec.h"

static bool preload_contains(const char *list, const char *path) {
  size_t n = strlen(path);
  for (const char *p = list; *p;) {
    while (*p == ':' || *p == ' ') p++;
    const char *end = p + strcspn(p, ": ");
    if ((size_t)(end - p) == n && strncmp(p, path, n) == 0) return true;
    p = end;
  }
  return false;
}

static char *put_var(char **cursor, const char *name, const char *a, const char *sep, const char *b) {
  char *start = *cursor, *p = start;
  p = stpcpy(p, name);
  *p++ = '=';
  p = stpcpy(p, a);
  if (sep) {
    p = stpcpy(p, sep);
    p = stpcpy(p, b);
  }
  *cursor = p + 1;
  return start;
}

/* The session variables every exec'd program gets back: name, the value ("": none). */
struct session_var {
  const char *prefix; /* "NAME=" */
  const char *value;
};

#define SESSION_VARS_MAX 5

static size_t session_vars(struct session_var vars[SESSION_VARS_MAX]) {
  size_t n = 0;
  vars[n++] = (struct session_var){"TSMIRROR_SOCK=", shim_cfg.sock_path};
  vars[n++] = (struct session_var){"TSMIRROR_SHIM=", shim_cfg.shim_path};
  if (shim_cfg.log_path[0]) vars[n++] = (struct session_var){"TSMIRROR_SHIM_LOG=", shim_cfg.log_path};
  if (shim_cfg.supervisor_path[0]) vars[n++] = (struct session_var){"TSMIRROR_SUPERVISOR=", shim_cfg.supervisor_path};
  if (shim_cfg.cli_pid[0]) vars[n++] = (struct session_var){"TSMIRROR_CLI_PID=", shim_cfg.cli_pid};
  return n;
}

/* Returns envp itself when nothing is missing, else a fixed copy (release with
 * env_release). Never fails the exec: on error the program's envp is used. */
SHIM_HIDDEN char *const *env_fixed(char *const envp[], struct env_fix *fix) {
  fix->map = NULL;
  fix->map_len = 0;
  if (!shim_intercepting() || !shim_cfg.shim_path[0]) return envp;
  rfile_before_exec(); /* pod files the new program inherits must be complete (rfile.c) */

  const char *shim = shim_cfg.shim_path;
  struct session_var vars[SESSION_VARS_MAX];
  size_t nvars = session_vars(vars);
  bool ok[SESSION_VARS_MAX] = {false};
  size_t n = 0;
  const char *preload = NULL;
  for (; envp && envp[n]; n++) {
    const char *e = envp[n];
    if (has_prefix(e, "LD_PRELOAD=")) preload = e + strlen("LD_PRELOAD=");
    for (size_t v = 0; v < nvars; v++)
      if (has_prefix(e, vars[v].prefix)) ok[v] = strcmp(e + strlen(vars[v].prefix), vars[v].value) == 0;
  }
  bool preload_ok = preload && preload_contains(preload, shim);
  bool all_ok = preload_ok;
  for (size_t v = 0; v < nvars; v++) all_ok = all_ok && ok[v];
  if (all_ok) return envp;

  size_t strings = strlen("LD_PRELOAD=") + strlen(shim) + 1 + (preload ? strlen(preload) : 0) + 1;
  for (size_t v = 0; v < nvars; v++) strings += strlen(vars[v].prefix) + strlen(vars[v].value) + 1;
  size_t len = (n + 2 + nvars) * sizeof(char *) + strings;
  char **out = map_bytes(len);
  if (!out) return envp;
  fix->map = out;
  fix->map_len = len;
  char *cursor = (char *)(out + n + 2 + nvars);
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const char *e = envp[i];
    bool ours = has_prefix(e, "LD_PRELOAD=");
    for (size_t v = 0; v < nvars && !ours; v++) ours = has_prefix(e, vars[v].prefix);
    if (!ours) out[k++] = (char *)e;
  }
  /* Ours goes first so that our hooks win over another preload's. */
  if (preload_ok) out[k++] = put_var(&cursor, "LD_PRELOAD", preload, NULL, NULL);
  else if (preload && *preload) out[k++] = put_var(&cursor, "LD_PRELOAD", shim, ":", preload);
  else out[k++] = put_var(&cursor, "LD_PRELOAD", shim, NULL, NULL);
  for (size_t v = 0; v < nvars; v++) {
    char *start = cursor;
    cursor = stpcpy(stpcpy(cursor, vars[v].prefix), vars[v].value) + 1;
    out[k++] = start;
  }
  out[k] = NULL;
  return out;
}

SHIM_HIDDEN void env_release(struct env_fix *fix) {
  if (fix->map) {
    int saved = errno;
    munmap(fix->map, fix->map_len);
    errno = saved;
  }
}
