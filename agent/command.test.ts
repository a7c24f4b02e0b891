import { afterEach, describe, expect, it } from 'vitest';
import { TsmError } from '../protocol/errors.js';
import { clusterSettings, parseListen, type AgentFlags } from './command.js';

const flags = (extra: Partial<AgentFlags> = {}): AgentFlags => ({ listen: '127.0.0.1:7777', heartbeatInterval: '2000', heartbeatTimeout: '10000', policyPoll: '5000', ...extra });

function usageError(run: () => unknown): TsmError {
  try {
    run();
  } catch (err) {
    expect(err).toBeInstanceOf(TsmError);
    expect((err as TsmError).code).toBe('TSM_ERR_USAGE');
    return err as TsmError;
  }
  throw new Error('no error');
}

describe('parseListen', () => {
  it('takes HOST:PORT, IPv6 in brackets', () => {
    expect(parseListen('0.0.0.0:7778', '--health-listen')).toEqual({ host: '0.0.0.0', port: 7778 });
    expect(parseListen('[::1]:0', '--listen')).toEqual({ host: '::1', port: 0 });
  });

  it('names the flag when the value is not HOST:PORT', () => {
    expect(usageError(() => parseListen('7777', '--listen')).message).toBe('--listen "7777" must be HOST:PORT');
  });
});

describe('clusterSettings', () => {
  const nodeName = process.env.NODE_NAME;
  afterEach(() => {
    if (nodeName === undefined) delete process.env.NODE_NAME;
    else process.env.NODE_NAME = nodeName;
  });

  it('none without --in-cluster or --kubeconfig; a policy ConfigMap then is a usage error', () => {
    expect(clusterSettings(flags())).toBeUndefined();
    expect(usageError(() => clusterSettings(flags({ policyConfigmap: 'a/b' }))).message).toContain('--policy-configmap needs --in-cluster or --kubeconfig');
  });

  it('the node from --node-name, else $NODE_NAME, else a usage error saying how to set it', () => {
    delete process.env.NODE_NAME;
    expect(usageError(() => clusterSettings(flags({ inCluster: true }))).hint).toContain('NODE_NAME');
    process.env.NODE_NAME = 'node-env';
    expect(clusterSettings(flags({ inCluster: true }))?.node).toBe('node-env');
    expect(clusterSettings(flags({ inCluster: true, nodeName: 'node-flag' }))?.node).toBe('node-flag');
  });

  it('parses the ConfigMap and the poll interval, refusing malformed ones', () => {
    expect(clusterSettings(flags({ kubeconfig: '/k', nodeName: 'n', policyConfigmap: 'tsmirror-system/policy', policyPoll: '100' })))
      .toEqual({ kubeconfig: '/k', node: 'n', configMap: { namespace: 'tsmirror-system', name: 'policy' }, pollMs: 100 });
    expect(usageError(() => clusterSettings(flags({ inCluster: true, nodeName: 'n', policyConfigmap: 'a/b/c' }))).message).toContain('must be NAMESPACE/NAME');
    expect(usageError(() => clusterSettings(flags({ inCluster: true, nodeName: 'n', policyPoll: '10' }))).message).toContain('--policy-poll must be a number of milliseconds ≥ 50');
  });
});
