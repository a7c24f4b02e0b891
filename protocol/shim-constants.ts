/**
 * The constants of the shim ↔ session proxy wire that both sides must agree on, and the
 * default path rules: part of protocol/shim-wire.ts (which re-exports them), kept apart
 * because they need no codec.
 */

// wire.h carries these as WIRE_* (protocol/shim-wire-gen.ts).

/** Largest frame either side sends; the other drops the channel on a larger one. */
export const SHIM_MAX_FRAME_BYTES = 1024 * 1024;
/** The unit a lazily filled pod file is filled in (the shim's chunk, the proxy's block). */
export const SHIM_FILE_BLOCK_BYTES = 64 * 1024;
/** Sequential reading doubles the read-ahead window up to this (shim and proxy alike). */
export const SHIM_READ_AHEAD_MAX_BYTES = 16 * 1024 * 1024;
/** A read-only, non-eager open of a pod file larger than this is filled lazily (`lazy`). */
export const SHIM_LAZY_ABOVE_BYTES = 8 * 1024 * 1024;
/** Longest path on the wire (PATH_MAX less its NUL: the shim's buffers are PATH_MAX). */
export const SHIM_MAX_PATH = 4095;
/** Longest host name (resolve, canonname, reverse's answer; NI_MAXHOST less its NUL is 1024). */
export const SHIM_MAX_NAME = 1024;
/** Longest address text (an IPv6 address is at most 45 characters; the shim keeps 63). */
export const SHIM_MAX_ADDRESS_TEXT = 63;
/** Addresses of one resolve answer the shim keeps (the rest are ignored). */
export const SHIM_MAX_ADDRS = 64;
/** Regexes of each fs.config list the shim compiles (the rest are ignored). */
export const SHIM_MAX_RULES = 64;
/** Kept trees (fs.config `keep`) the shim keeps. */
export const SHIM_MAX_KEEP = 8;
/** Largest DNS message (res.send's query and answer): TCP's 2-byte length. */
export const SHIM_MAX_DNS_MESSAGE = 65535;
/** Nameservers a res.config answer carries (glibc's MAXNS: what struct __res_state holds). */
export const SHIM_MAX_NAMESERVERS = 3;
/** Search domains a res.config answer carries (glibc's MAXDNSRCH). */
export const SHIM_MAX_SEARCH = 6;
/** Longest search domain (a domain name's 253 characters). */
export const SHIM_MAX_DOMAIN = 253;
/** Longest human `message` the shim keeps (it only logs it). */
export const SHIM_MAX_MESSAGE = 255;

/**
 * The default path rules (after --fs-local, --fs-remote, --fs-not-found): the pod-specific
 * files are remote although under a local tree; then the local trees, the kept trees
 * (fs.config `keep`), any path through a local directory name, and shared libraries
 * (`*.so`, `*.so.N`) are local; everything else is the pod's.
 */
export const DEFAULT_PATH_RULES = {
  /** Pod-specific files (and trees): remote, although /etc is local. */
  remoteFiles: ['/etc/resolv.conf', '/etc/hosts', '/etc/hostname', '/etc/ssl/certs'],
  /** Trees that are local (a path equal to one or under it). */
  localTrees: ['/usr', '/lib', '/lib32', '/lib64', '/libx32', '/bin', '/sbin', '/opt', '/proc', '/sys', '/dev', '/run', '/tmp', '/var/tmp', '/etc'],
  /** A path through a directory of one of these names is local. */
  localDirNames: ['node_modules'],
} as const;

/** The default rules in a sentence (exec --help). */
export function describeDefaultPathRules(): string {
  const d = DEFAULT_PATH_RULES;
  const list = (items: readonly string[]): string => `${items.slice(0, -1).join(', ')} and ${items.at(-1) ?? ''}`;
  return `by default the program reads the pod's files except ${d.localTrees.join(', ')} (but ${list(d.remoteFiles)} come from the pod), ` +
    `the home directory, the program's directory, the current directory, ${d.localDirNames.join(', ')}, shared libraries and relative paths, which stay local.`;
}
