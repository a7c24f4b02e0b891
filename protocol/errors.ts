/**
 * Every failure tsmirror reports has a stable `TSM_ERR_*` code. The codes are listed
 * here, in one place, each with what it means; `docs/troubleshooting.md` explains each to
 * users, with its fix.
 */
export const ErrorCodes = {
  TSM_ERR_USAGE: 'the command line or configuration is wrong',
  TSM_ERR_VERSION: 'the CLI and the agent speak different protocol versions',
  TSM_ERR_HANDSHAKE: 'the session could not be established',
  TSM_ERR_BAD_FRAME: 'a frame could not be decoded or was malformed',
  TSM_ERR_FRAME_TOO_LARGE: 'a frame was larger than the limit',
  TSM_ERR_UNKNOWN_MESSAGE: 'a message of an unknown type arrived',
  TSM_ERR_HEARTBEAT: 'the peer stopped answering heartbeats',
  TSM_ERR_SESSION_CLOSED: 'the session ended',
  TSM_ERR_AGENT_UNREACHABLE: 'the agent could not be reached',
  TSM_ERR_TARGET_NOT_FOUND: 'the target process or container was not found',
  TSM_ERR_TARGET_GONE: 'the target process exited',
  TSM_ERR_CONNECT: 'a connection from the pod failed',
  TSM_ERR_DNS: 'a name lookup in the pod failed',
  TSM_ERR_FILE: "a file operation in the pod's filesystem failed",
  TSM_ERR_STATIC_BINARY: 'the program is statically linked, so the shim cannot be preloaded',
  TSM_ERR_SETUID: 'the program is setuid or setgid, so the loader ignores the shim',
  TSM_ERR_SHIM_MISSING: 'the native shim (libtsmirror.so) was not built',
  TSM_ERR_PROGRAM_NOT_FOUND: 'the program to run was not found',
  TSM_ERR_PERMISSION: 'the agent lacks a privilege it needs',
  TSM_ERR_INTERNAL: 'an internal error',
  TSM_ERR_CONFIG: 'the config file is missing, unreadable or invalid',
  TSM_ERR_PORT_CONFLICT: 'another session already steals this port',
  TSM_ERR_REDIRECT: 'the traffic redirect in the pod could not be set up',
  TSM_ERR_POLICY: "the agent's policy refused the session",
  TSM_ERR_KUBE_CONFIG: 'the kubeconfig could not be loaded or has no usable context',
  TSM_ERR_KUBE_API: 'a Kubernetes API request failed',
  TSM_ERR_KUBE_FORBIDDEN: 'the Kubernetes API refused a request (RBAC)',
  TSM_ERR_NO_READY_POD: 'the workload has no running and ready pod',
  TSM_ERR_NO_AGENT: 'no tsmirror agent runs on the target\'s node',
  TSM_ERR_PORT_FORWARD: 'the port-forward to the agent through the API server failed or dropped',
  TSM_ERR_UNAUTHENTICATED: 'the agent could not verify the user',
  TSM_ERR_SESSION_DELETED: "the session's Session object (sessions.tsmirror.dev) was deleted",
  TSM_ERR_RESUME_REFUSED: 'the agent no longer holds the session to resume (it restarted, or the reconnect grace ran out)',
  TSM_ERR_PROTOCOL: 'the peer broke the stream rules (a stream opened twice, an id outside its range, a flow-control window overrun)',
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

/** The root of every error tsmirror raises on purpose. */
export class TsmError extends Error {
  readonly code: ErrorCode;
  /** What the user can do about it, shown under the message. */
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; hint?: string } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'TsmError';
    this.code = code;
    this.hint = options.hint;
  }
}

/** An error the remote side reported for one request (not fatal for the session). */
export class RemoteError extends TsmError {
  /** A Linux errno number when the failure was a system call in the pod. */
  readonly errno: number | undefined;

  constructor(code: ErrorCode, message: string, errno?: number) {
    super(code, message);
    this.name = 'RemoteError';
    this.errno = errno;
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ErrorCodes, value);
}
