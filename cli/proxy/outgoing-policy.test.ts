import { describe, expect, it } from 'vitest';
import { RemoteError, TsmError } from '../../protocol/errors.js';
import { parseDestRule } from '../routing.js';
import { destinationOf, podRefusal, type OutgoingPolicy } from './outgoing-policy.js';

const policy: OutgoingPolicy = {
  routing: { remoteLocalhost: false, localDest: [parseDestRule('192.168.0.0/16')], remoteDest: [] },
  localNameservers: ['127.0.0.53', '192.168.1.1'],
  podNameservers: ['10.96.0.10'],
};

describe('where a connect goes', () => {
  it('loopback and --local-dest stay local; everything else goes through the pod, unmapped', () => {
    expect(destinationOf(policy, '127.0.0.1', 8080)).toEqual({ action: 'local' });
    expect(destinationOf(policy, '192.168.5.5', 443)).toEqual({ action: 'local' });
    expect(destinationOf(policy, '10.244.1.3', 80)).toEqual({ action: 'remote', address: '10.244.1.3', family: 4 });
    expect(destinationOf(policy, '::ffff:10.244.1.3', 80)).toEqual({ action: 'remote', address: '10.244.1.3', family: 4 });
    expect(destinationOf(policy, 'fd00::3', 80)).toEqual({ action: 'remote', address: 'fd00::3', family: 6 });
  });

  it('port 53 of this machine\'s nameserver goes to the pod\'s, whether the rules say local (loopback, --local-dest) or not', () => {
    const pod = { action: 'remote', address: '10.96.0.10', family: 4 };
    expect(destinationOf(policy, '127.0.0.53', 53)).toEqual(pod);
    expect(destinationOf(policy, '192.168.1.1', 53)).toEqual(pod);
    expect(destinationOf(policy, '::ffff:127.0.0.53', 53)).toEqual(pod);
    expect(destinationOf({ ...policy, routing: { ...policy.routing, localDest: [] } }, '192.168.1.1', 53)).toEqual(pod);
    expect(destinationOf({ ...policy, podNameservers: ['fd00::a'] }, '127.0.0.53', 53)).toEqual({ action: 'remote', address: 'fd00::a', family: 6 });
  });

  it('no redirect for another port, another nameserver, or a pod without one', () => {
    expect(destinationOf(policy, '127.0.0.53', 5353)).toEqual({ action: 'local' });
    expect(destinationOf(policy, '127.0.0.1', 53)).toEqual({ action: 'local' });
    expect(destinationOf(policy, '8.8.8.8', 53)).toEqual({ action: 'remote', address: '8.8.8.8', family: 4 });
    expect(destinationOf({ ...policy, podNameservers: [] }, '127.0.0.53', 53)).toEqual({ action: 'local' });
  });

  it('a name is not a destination (the shim sends literals)', () => {
    expect(() => destinationOf(policy, 'db', 80)).toThrow(TsmError);
  });

  it('the pod\'s own errno is the reply; other failures are not', () => {
    expect(podRefusal(new RemoteError('TSM_ERR_CONNECT', 'refused', 111))).toEqual({ ok: false, errno: 111, message: 'refused' });
    expect(podRefusal(new RemoteError('TSM_ERR_CONNECT', 'no errno'))).toBeUndefined();
    expect(podRefusal(new Error('x'))).toBeUndefined();
  });
});
