// The entry esbuild bundles into dist/vendor/kubernetes-client.js (npm run build:vendor):
// the parts of @kubernetes/client-node that cli/kubernetes-client.ts hands out.
export {
  ApisApi, AppsV1Api, AuthenticationV1Api, AuthorizationV1Api, BatchV1Api, CoreV1Api, CustomObjectsApi,
  KubeConfig, KubernetesObjectApi, PatchStrategy, PortForward, VersionApi,
} from '@kubernetes/client-node';
