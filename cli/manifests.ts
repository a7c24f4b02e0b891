/**
 * The agent's Kubernetes manifests, from one source: `tsmirror install` applies them,
 * `tsmirror install --dry-run` prints them, and the kustomize base in daemonset/ is
 * written from them (`npm run manifests`; a test checks the files are current).
 *
 * Least privilege that works: the agent runs with hostPID (it finds a container's
 * process in /proc and enters its network namespace) but is not privileged and not on
 * the host network; it keeps only the capabilities setns, /proc/PID/root and netfilter
 * need, and its session port listens on its own pod's loopback, so it is reachable only
 * through the API server's port-forward (RBAC `create pods/portforward` is the gate).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { stringify } from 'yaml';
import { packageVersion } from '../native/index.js';
import {
  SESSION_ADMISSION_POLICY, SESSION_GROUP, SESSION_KIND, SESSION_PLURAL, SESSION_VALIDATIONS, SESSION_VERSION,
} from '../common/session-object.js';

export { SESSION_ADMISSION_POLICY, SESSION_VALIDATIONS, type CelValidation } from '../common/session-object.js';

export interface ManifestOptions {
  namespace: string;
  image: string;
  version: string;
}

export const DEFAULT_IMAGE_REPOSITORY = 'ghcr.io/tsmirror/agent';
export const defaultImage = (): string => `${DEFAULT_IMAGE_REPOSITORY}:${packageVersion}`;

export type Manifest = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string>; [k: string]: unknown }; [k: string]: unknown };

const NAME = 'tsmirror-agent';
export const POLICY_CONFIGMAP = 'tsmirror-policy';

/** The policy shipped by default: the cluster's own namespaces are off limits. */
export const DEFAULT_POLICY = `# tsmirror agent policy (docs/install.md). Namespaces are regular expressions that
# must match the whole namespace name. The agent re-reads this within seconds of a change.

# Unfiltered steal (all of a port's traffic) is refused here; filtered steal and mirror are allowed.
protectedNamespaces: []
# Every session targeting a pod here is refused.
deniedNamespaces:
  - kube-system
  - tsmirror-system
# \`tsmirror record\` (which carries the pod's traffic out of the cluster) is refused here.
recordDeniedNamespaces: []
# Who may open which session is RBAC's: every session needs a Session object
# (sessions.tsmirror.dev) that its user created (docs/install.md).
`;

/** The ClusterRoles a cluster admin binds, per namespace, for the session modes beyond the base. */
export const STEAL_ROLE = 'tsmirror-steal';
export const WRITE_FILES_ROLE = 'tsmirror-write-files';

/**
 * The modes that need a grant of their own are virtual subresources of sessions (no API
 * serves them): RBAC can grant `create sessions/steal` without anything else, and the
 * admission policy asks the authorizer about it.
 */
function modeGrantRoles(): Manifest[] {
  const grant = (name: string, subresource: string): Manifest => ({
    apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', metadata: { name, labels: { 'app.kubernetes.io/part-of': 'tsmirror' } },
    rules: [{ apiGroups: [SESSION_GROUP], resources: [`${SESSION_PLURAL}/${subresource}`], verbs: ['create'] }],
  });
  return [grant(STEAL_ROLE, 'steal'), grant(WRITE_FILES_ROLE, 'writefiles')];
}

/** The Session CRD: `kubectl get sessions.tsmirror.dev -A` lists who mirrors or steals what. */
export function sessionCrd(): Manifest {
  const str = { type: 'string' };
  return {
    apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition',
    metadata: { name: `${SESSION_PLURAL}.${SESSION_GROUP}`, labels: { 'app.kubernetes.io/part-of': 'tsmirror' } },
    spec: {
      group: SESSION_GROUP,
      scope: 'Namespaced',
      names: { plural: SESSION_PLURAL, singular: 'session', kind: SESSION_KIND, listKind: `${SESSION_KIND}List`, shortNames: ['tsms'] },
      versions: [{
        name: SESSION_VERSION, served: true, storage: true,
        subresources: { status: {} },
        additionalPrinterColumns: [
          { name: 'User', type: 'string', jsonPath: '.spec.user' },
          { name: 'Pod', type: 'string', jsonPath: '.spec.target.pod' },
          { name: 'Container', type: 'string', jsonPath: '.spec.target.container' },
          { name: 'Incoming', type: 'string', jsonPath: '.spec.mode.incoming' },
          { name: 'Files', type: 'string', jsonPath: '.spec.mode.files' },
          { name: 'Node', type: 'string', jsonPath: '.spec.node', priority: 1 },
          { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
        ],
        schema: {
          openAPIV3Schema: {
            type: 'object',
            required: ['spec'],
            properties: {
              spec: {
                type: 'object',
                required: ['user', 'target', 'mode', 'secretHash', 'node'],
                // The agent reads the spec once, at the hello; a spec that changed after would lie.
                'x-kubernetes-validations': [{ rule: 'self == oldSelf', message: "a Session's spec cannot change; delete it and create another" }],
                properties: {
                  user: { ...str, description: 'the user who created it (the admission policy checks)' },
                  target: {
                    type: 'object', required: ['pod', 'container', 'containerId'],
                    properties: { pod: str, container: str, containerId: { ...str, description: 'the container id from the pod status, with its runtime prefix' } },
                  },
                  mode: {
                    type: 'object', required: ['files', 'incoming', 'filtered'],
                    properties: {
                      files: { type: 'string', enum: ['read', 'write'] },
                      incoming: { type: 'string', enum: ['none', 'mirror', 'steal'] },
                      filtered: { type: 'boolean', description: 'steal only requests an HTTP filter selects' },
                    },
                  },
                  secretHash: { type: 'string', pattern: '^[0-9a-f]{64}$', description: "sha256 of the one-time secret the CLI gives the agent" },
                  node: { ...str, description: 'the node whose agent may serve the session' },
                },
              },
              status: {
                type: 'object',
                properties: { claimedBy: { ...str, description: 'the agent that opened the session' }, claimedAt: { type: 'string', format: 'date-time' } },
              },
            },
          },
        },
      }],
    },
  };
}

/** The ValidatingAdmissionPolicy (Kubernetes 1.30+) and its binding. */
export function sessionAdmission(): Manifest[] {
  const labels = { 'app.kubernetes.io/part-of': 'tsmirror' };
  return [
    {
      apiVersion: 'admissionregistration.k8s.io/v1', kind: 'ValidatingAdmissionPolicy', metadata: { name: SESSION_ADMISSION_POLICY, labels },
      spec: {
        // Without the policy a Session could name anyone: refuse rather than let it through.
        failurePolicy: 'Fail',
        // The agent claims a Session through its status subresource, which this does not match.
        matchConstraints: { resourceRules: [{ apiGroups: [SESSION_GROUP], apiVersions: [SESSION_VERSION], operations: ['CREATE', 'UPDATE'], resources: [SESSION_PLURAL] }] },
        validations: SESSION_VALIDATIONS,
      },
    },
    {
      apiVersion: 'admissionregistration.k8s.io/v1', kind: 'ValidatingAdmissionPolicyBinding', metadata: { name: SESSION_ADMISSION_POLICY, labels },
      spec: { policyName: SESSION_ADMISSION_POLICY, validationActions: ['Deny'] },
    },
  ];
}

export function agentManifests(o: ManifestOptions): { file: string; objects: Manifest[] }[] {
  const labels = { 'app.kubernetes.io/name': NAME, 'app.kubernetes.io/part-of': 'tsmirror' };
  const ns = o.namespace;
  return [
    {
      file: 'namespace.yaml',
      objects: [{
        apiVersion: 'v1', kind: 'Namespace',
        metadata: {
          name: ns,
          labels: {
            'app.kubernetes.io/part-of': 'tsmirror',
            // hostPID and added capabilities are outside the baseline and restricted profiles.
            'pod-security.kubernetes.io/enforce': 'privileged',
            'pod-security.kubernetes.io/audit': 'privileged',
            'pod-security.kubernetes.io/warn': 'privileged',
          },
        },
      }],
    },
    { file: 'session-crd.yaml', objects: [sessionCrd()] },
    {
      file: 'rbac.yaml',
      objects: [
        { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: NAME, namespace: ns, labels } },
        {
          apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', metadata: { name: NAME, labels },
          rules: [
            // Which pod owns a container on this node (the session's namespace comes from it).
            { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch'] },
            // The Session objects users create (who, what, which mode): read at each hello and
            // watched until deleted; claimed once (status) so one secret opens one session;
            // deleted when their session ends (a killed CLI cannot).
            { apiGroups: [SESSION_GROUP], resources: [SESSION_PLURAL], verbs: ['get', 'list', 'watch', 'delete'] },
            { apiGroups: [SESSION_GROUP], resources: [`${SESSION_PLURAL}/status`], verbs: ['get', 'update'] },
            // Sessions are trusted only while the cluster's admission policy checks them.
            { apiGroups: ['admissionregistration.k8s.io'], resources: ['validatingadmissionpolicies', 'validatingadmissionpolicybindings'], resourceNames: [SESSION_ADMISSION_POLICY], verbs: ['get'] },
          ],
        },
        {
          apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name: NAME, labels },
          roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: NAME },
          subjects: [{ kind: 'ServiceAccount', name: NAME, namespace: ns }],
        },
        {
          apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: `${NAME}-policy`, namespace: ns, labels },
          rules: [{ apiGroups: [''], resources: ['configmaps'], resourceNames: [POLICY_CONFIGMAP], verbs: ['get', 'watch'] }],
        },
        {
          apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: `${NAME}-policy`, namespace: ns, labels },
          roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: `${NAME}-policy` },
          subjects: [{ kind: 'ServiceAccount', name: NAME, namespace: ns }],
        },
        {
          // For developers: bind it with a RoleBinding in each namespace they may target, and
          // in the agent's namespace (to reach the agent through port-forward).
          apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', metadata: { name: 'tsmirror-user', labels: { 'app.kubernetes.io/part-of': 'tsmirror' } },
          rules: [
            { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list'] },
            { apiGroups: [''], resources: ['pods/portforward'], verbs: ['create'] },
            { apiGroups: ['apps'], resources: ['deployments', 'statefulsets', 'replicasets', 'daemonsets'], verbs: ['get', 'list'] },
            { apiGroups: ['batch'], resources: ['jobs'], verbs: ['get', 'list'] },
            { apiGroups: ['argoproj.io'], resources: ['rollouts'], verbs: ['get', 'list'] },
            // A session is a Session object the user creates in the target's namespace (and
            // deletes at exit); listing them shows who mirrors or steals what.
            { apiGroups: [SESSION_GROUP], resources: [SESSION_PLURAL], verbs: ['create', 'get', 'list', 'watch', 'delete'] },
          ],
        },
        ...modeGrantRoles(),
      ],
    },
    { file: 'session-admission.yaml', objects: sessionAdmission() },
    {
      file: 'policy.yaml',
      objects: [{
        apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: POLICY_CONFIGMAP, namespace: ns, labels },
        data: { 'policy.yaml': DEFAULT_POLICY },
      }],
    },
    {
      file: 'daemonset.yaml',
      objects: [{
        apiVersion: 'apps/v1', kind: 'DaemonSet', metadata: { name: NAME, namespace: ns, labels },
        spec: {
          selector: { matchLabels: { 'app.kubernetes.io/name': NAME } },
          updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } },
          template: {
            metadata: { labels: { ...labels, 'app.kubernetes.io/version': o.version } },
            spec: {
              serviceAccountName: NAME,
              hostPID: true,
              hostNetwork: false,
              enableServiceLinks: false,
              priorityClassName: 'system-node-critical',
              terminationGracePeriodSeconds: 10,
              // An agent on every node, whatever its taints.
              tolerations: [{ operator: 'Exists' }],
              containers: [{
                name: 'agent',
                image: o.image,
                imagePullPolicy: 'IfNotPresent',
                args: ['agent', '--listen', '127.0.0.1:7777', '--health-listen', '0.0.0.0:7778', '--in-cluster', '--policy-configmap', `${ns}/${POLICY_CONFIGMAP}`],
                env: [
                  { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
                  { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
                ],
                // The session port listens on the pod's loopback only: reached through port-forward.
                ports: [{ name: 'session', containerPort: 7777, protocol: 'TCP' }, { name: 'health', containerPort: 7778, protocol: 'TCP' }],
                readinessProbe: { httpGet: { path: '/healthz', port: 'health' }, periodSeconds: 5, timeoutSeconds: 2 },
                livenessProbe: { httpGet: { path: '/healthz', port: 'health' }, initialDelaySeconds: 5, periodSeconds: 10, timeoutSeconds: 2, failureThreshold: 3 },
                resources: { requests: { cpu: '50m', memory: '64Mi' }, limits: { cpu: '1', memory: '512Mi' } },
                securityContext: {
                  privileged: false,
                  runAsUser: 0,
                  readOnlyRootFilesystem: true,
                  // setns into pods' namespaces (SYS_ADMIN), their /proc/PID/root and environ
                  // (SYS_PTRACE, DAC_READ_SEARCH), netfilter in their netns (NET_ADMIN, NET_RAW).
                  capabilities: { drop: ['ALL'], add: ['SYS_ADMIN', 'SYS_PTRACE', 'DAC_READ_SEARCH', 'NET_ADMIN', 'NET_RAW'] },
                  seccompProfile: { type: 'RuntimeDefault' },
                  // The runtime's default AppArmor profile forbids ptrace-reading other containers.
                  appArmorProfile: { type: 'Unconfined' },
                },
                volumeMounts: [{ name: 'tmp', mountPath: '/tmp' }],
              }],
              volumes: [{ name: 'tmp', emptyDir: { sizeLimit: '64Mi' } }],
            },
          },
        },
      }],
    },
  ];
}

/** All objects, in apply order. */
export function allManifests(o: ManifestOptions): Manifest[] {
  return agentManifests(o).flatMap((f) => f.objects);
}

const HEADER = '# Generated from cli/manifests.ts by `npm run manifests`: edit that file, not this one.\n';

/** Multi-document YAML, as `install --dry-run` prints it. */
export function toYamlDocuments(objects: Manifest[]): string {
  return objects.map((o) => `---\n${stringify(o, { lineWidth: 0 })}`).join('');
}

/** The kustomize base: one file per group of objects plus kustomization.yaml. */
export function kustomizeBase(): Record<string, string> {
  const files: Record<string, string> = {};
  const groups = agentManifests({ namespace: 'tsmirror-system', image: defaultImage(), version: packageVersion });
  for (const g of groups) files[g.file] = HEADER + toYamlDocuments(g.objects);
  files['kustomization.yaml'] = HEADER + stringify({
    apiVersion: 'kustomize.config.k8s.io/v1beta1',
    kind: 'Kustomization',
    resources: groups.map((g) => g.file),
    // Point at your registry with `kustomize edit set image ghcr.io/tsmirror/agent=REGISTRY/IMAGE:TAG`.
    images: [{ name: DEFAULT_IMAGE_REPOSITORY, newTag: packageVersion }],
  });
  return files;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const dir = process.argv[2] ?? 'daemonset';
  mkdirSync(dir, { recursive: true });
  for (const [file, text] of Object.entries(kustomizeBase())) writeFileSync(join(dir, file), text);
  process.stdout.write(`wrote ${Object.keys(kustomizeBase()).join(', ')} in ${dir}/\n`);
}
