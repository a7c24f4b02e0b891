/**
 * What the session proxy's modules need of the agent session: requests, stream ids, the
 * stream mux and the agent's own messages. AgentConnection (cli/agent-client.ts) is one;
 * unit tests pass an in-process agent of their own.
 */
import type { AgentHello, AgentMessage } from '../../protocol/messages.js';
import type { Mux } from '../../protocol/mux.js';
import type { AgentConnection } from '../agent-client.js';

export interface ProxyAgent {
  readonly hello: AgentHello;
  readonly peer: {
    readonly mux: Mux;
    readonly closed: boolean;
    on(event: 'message', listener: (m: AgentMessage) => void): unknown;
  };
  allocateStream(): number;
  request: AgentConnection['request'];
}
