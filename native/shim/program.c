/*
 * What kind of program a file is, read the way the kernel will run it: a `#!` script
 * (its interpreter decides), a dynamically linked ELF program (PT_INTERP: the shim can
 * be preloaded), a statically linked one, and whether it is a Go program (Go makes its
 * own system calls, past any preload, whether linked statically or not). The exec hooks
 * (exec_supervisor.c) use it to run static and Go programs under the seccomp supervisor;
 * the supervisor's `--inspect` prints it. cli/launch.ts inspectProgram applies the same
 * rules to choose how the CLI's own program is intercepted; keep the two in agreement
 * (test/e2e/seccomp-child.test.ts compares them on real programs).
 *
 * The rules (docs/ARCHITECTURE.md, "Which interception"):
 *   - ELF: class 32 or 64, either byte order; e_type EXEC or DYN; e_phentsize the
 *     class's program header size; 1 to 4096 bytes of program headers, within the file
 *     (the kernel refuses other tables); at least one PT_LOAD. Dynamic: a PT_INTERP.
 *   - Go: a note named "Go" (namesz 3 or 4) of type 4 (the build id, .note.go.buildid) in the first
 *     4 KiB of a PT_NOTE segment, or Go's build information ("\xff Go buildinf:") at a
 *     16-byte boundary, with 32 bytes after it, in the first 64 KiB of the first
 *     writable, non-executable PT_LOAD (where Go's debug/buildinfo looks).
 *   - Script: "#!" then the interpreter (spaces and tabs skipped; it ends at a space, tab
 *     or newline), taken as the kernel takes it (relative to the current directory).
 *
 * Every file is hostile: reads are bounded (the header, one program header table of at
 * most 4 KiB, 4 KiB per note segment, 64 KiB of data read in 4 KiB pieces), every
 * offset is checked against what was read, and anything that does not parse is "other"
 * (the exec then goes ahead exactly as it would without tsmirror).
 */
#include "shim.h"

#include <string.h>

#define PT_LOAD_ 1
#define PT_INTERP_ 3
#define PT_NOTE_ 4
#define PF_X_ 1
#define PF_W_ 2
#define PHDRS_MAX 4096
#define NOTE_READ_MAX 4096
#define BUILDINFO_SCAN 65536

static const char go_buildinfo_magic[] = "\xff Go buildinf:"; /* 14 bytes */

struct elf_reader {
  int fd;
  off_t size;
  bool le;
};

static uint32_t get32(const struct elf_reader *r, const unsigned char *p) {
  return r->le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
               : (uint32_t)p[3] | (uint32_t)p[2] << 8 | (uint32_t)p[1] << 16 | (uint32_t)p[0] << 24;
}

static uint16_t get16(const struct elf_reader *r, const unsigned char *p) {
  return r->le ? (uint16_t)(p[0] | p[1] << 8) : (uint16_t)(p[1] | p[0] << 8);
}

static uint64_t get64(const struct elf_reader *r, const unsigned char *p) {
  uint64_t lo = get32(r, r->le ? p : p + 4), hi = get32(r, r->le ? p + 4 : p);
  return hi << 32 | lo;
}

/* Reads exactly len bytes at off (which must lie in the file); false otherwise. */
static bool read_at(const struct elf_reader *r, void *buf, size_t len, uint64_t off) {
  if (off > (uint64_t)r->size || len > (uint64_t)r->size - off) return false;
  size_t got = 0;
  while (got < len) {
    ssize_t n = REAL(pread)(r->fd, (char *)buf + got, len - got, (off_t)(off + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    got += (size_t)n;
  }
  return true;
}

static size_t pad(size_t n, size_t align) { return (n + align - 1) & ~(align - 1); }

/* A note named "Go" of type 4 in the first NOTE_READ_MAX bytes of one PT_NOTE segment. */
static bool go_note(const struct elf_reader *r, uint64_t off, uint64_t filesz, uint64_t align) {
  unsigned char buf[NOTE_READ_MAX];
  size_t len = filesz < sizeof buf ? (size_t)filesz : sizeof buf;
  if (!read_at(r, buf, len, off)) return false;
  size_t a = align == 8 ? 8 : 4;
  for (size_t at = 0; at + 12 <= len;) {
    uint32_t namesz = get32(r, buf + at), descsz = get32(r, buf + at + 4), type = get32(r, buf + at + 8);
    if (namesz > len || descsz > len) return false;
    size_t name = at + 12;
    /* Go writes the name "Go\0\0" (namesz 4); "Go\0" (3) is the same name. */
    if ((namesz == 3 || namesz == 4) && type == 4 && name + 3 <= len && memcmp(buf + name, "Go", 3) == 0) return true;
    size_t next = name + pad(namesz, a);
    if (next > len) return false;
    next = pad(next + descsz, a);
    if (next <= at) return false;
    at = next;
  }
  return false;
}

/* Go's build information at a 16-byte boundary of the first BUILDINFO_SCAN bytes of a segment. */
static bool go_buildinfo(const struct elf_reader *r, uint64_t off, uint64_t filesz) {
  unsigned char buf[4096];
  uint64_t len = filesz < BUILDINFO_SCAN ? filesz : BUILDINFO_SCAN;
  if (off > (uint64_t)r->size) return false;
  if (len > (uint64_t)r->size - off) len = (uint64_t)r->size - off;
  for (uint64_t at = 0; at + 32 <= len; at += sizeof buf) {
    size_t chunk = len - at < sizeof buf ? (size_t)(len - at) : sizeof buf;
    if (!read_at(r, buf, chunk, off + at)) return false;
    for (size_t i = 0; i + 14 <= chunk; i += 16)
      if (memcmp(buf + i, go_buildinfo_magic, 14) == 0 && at + i + 32 <= len) return true;
  }
  return false;
}

static void inspect_elf(const struct elf_reader *r, const unsigned char *h, struct shim_program *out) {
  bool is64 = h[4] == 2;
  uint16_t type = get16(r, h + 16);
  uint64_t phoff = is64 ? get64(r, h + 32) : get32(r, h + 28);
  uint16_t phentsize = get16(r, h + (is64 ? 54 : 42));
  uint16_t phnum = get16(r, h + (is64 ? 56 : 44));
  if ((type != 2 && type != 3) || phentsize != (is64 ? 56 : 32) || phnum == 0 ||
      (size_t)phnum * phentsize > PHDRS_MAX)
    return;
  unsigned char ph[PHDRS_MAX];
  if (!read_at(r, ph, (size_t)phnum * phentsize, phoff)) return;
  bool load = false, interp = false, go = false;
  bool data_seen = false;
  for (unsigned i = 0; i < phnum; i++) {
    const unsigned char *p = ph + (size_t)i * phentsize;
    uint32_t ptype = get32(r, p);
    uint32_t flags = is64 ? get32(r, p + 4) : get32(r, p + 24);
    uint64_t off = is64 ? get64(r, p + 8) : get32(r, p + 4);
    uint64_t filesz = is64 ? get64(r, p + 32) : get32(r, p + 16);
    uint64_t align = is64 ? get64(r, p + 48) : get32(r, p + 28);
    if (ptype == PT_INTERP_) interp = true;
    if (ptype == PT_LOAD_) load = true;
    if (!go && ptype == PT_NOTE_) go = go_note(r, off, filesz, align);
    if (ptype == PT_LOAD_ && !data_seen && (flags & (PF_X_ | PF_W_)) == PF_W_) {
      data_seen = true;
      if (!go) go = go_buildinfo(r, off, filesz);
    }
  }
  if (!load) return;
  out->kind = interp ? SHIM_PROG_DYNAMIC : SHIM_PROG_STATIC;
  out->go = go;
  out->elf32 = !is64;
}

SHIM_HIDDEN int shim_program_inspect(const char *path, struct shim_program *out) {
  memset(out, 0, sizeof *out);
  out->kind = SHIM_PROG_OTHER;
  struct stat st;
  /* Only a regular file: opening a FIFO or a device to look at it could block or act. */
  if (REAL(fstatat)(AT_FDCWD, path, &st, 0) < 0) return -errno;
  if (!S_ISREG(st.st_mode)) return -EACCES;
  int fd = REAL(openat)(AT_FDCWD, path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return -errno;
  struct stat same;
  if (REAL(fstat)(fd, &same) < 0 || same.st_dev != st.st_dev || same.st_ino != st.st_ino) {
    REAL(close)(fd);
    return -ESTALE;
  }
  out->setid = ((same.st_mode & S_ISUID) && same.st_uid != geteuid()) ||
               ((same.st_mode & S_ISGID) && same.st_gid != getegid());
  struct elf_reader r = {.fd = fd, .size = same.st_size, .le = true};
  unsigned char head[256];
  size_t len = same.st_size < (off_t)sizeof head ? (size_t)same.st_size : sizeof head;
  if (read_at(&r, head, len, 0)) {
    if (len >= 2 && head[0] == '#' && head[1] == '!') {
      size_t i = 2, end;
      while (i < len && (head[i] == ' ' || head[i] == '\t')) i++;
      for (end = i; end < len && head[end] != ' ' && head[end] != '\t' && head[end] != '\n' && head[end] != '\0'; end++) {}
      /* A name running to the end of a full buffer may be cut: not a script we know. */
      bool cut = end == len && len == sizeof head;
      if (end > i && !cut && end - i < sizeof out->interpreter) {
        memcpy(out->interpreter, head + i, end - i);
        out->interpreter[end - i] = '\0';
        out->kind = SHIM_PROG_SCRIPT;
      }
    } else if (len >= 64 && memcmp(head, "\x7f" "ELF", 4) == 0 && (head[4] == 1 || head[4] == 2) &&
               (head[5] == 1 || head[5] == 2)) {
      r.le = head[5] == 1;
      inspect_elf(&r, head, out);
    }
  }
  REAL(close)(fd);
  return 0;
}

SHIM_HIDDEN bool shim_program_wants_seccomp(const char *path) {
  struct shim_program p;
  char next[sizeof p.interpreter];
  /* The kernel follows at most 4 interpreters (BINPRM_MAX_RECURSION). */
  for (int depth = 0; depth <= 4; depth++) {
    if (shim_program_inspect(path, &p) < 0 || p.setid) return false;
    if (p.kind == SHIM_PROG_SCRIPT) {
      memcpy(next, p.interpreter, sizeof next);
      path = next;
      continue;
    }
    /* The supervisor serves 64-bit programs only: a 32-bit one runs as it would have. */
    return (p.kind == SHIM_PROG_STATIC || (p.kind == SHIM_PROG_DYNAMIC && p.go)) && !p.elf32;
  }
  return false;
}
