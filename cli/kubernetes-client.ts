/**
 * @kubernetes/client-node, loaded fast. Imported as published it is some 2,500 ES modules
 * (one per API model), which Node 20 takes about 0.3 s to resolve and link on every
 * `tsmirror exec` with a Kubernetes target. `npm run build` bundles what we use of the
 * installed package (cli/kubernetes-bundle.mjs) into one file by esbuild: the same code,
 * dist/vendor/kubernetes-client.js. This module loads that bundle, or the package itself
 * where no bundle was built (about 75 ms against 300). Values come from here; types
 * still come from '@kubernetes/client-node'.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type * as ClientNode from '@kubernetes/client-node';
import { packageRoot } from '../native/index.js';

export const bundlePath = join(packageRoot, 'dist', 'vendor', 'kubernetes-client.js');

const k8s = (existsSync(bundlePath) ? await import(pathToFileURL(bundlePath).href) : await import('@kubernetes/client-node')) as typeof ClientNode;

export const {
  ApisApi, AppsV1Api, AuthenticationV1Api, AuthorizationV1Api, BatchV1Api, CoreV1Api, CustomObjectsApi,
  KubeConfig, KubernetesObjectApi, PatchStrategy, PortForward, VersionApi,
} = k8s;
export type KubeConfig = ClientNode.KubeConfig;
export type CoreV1Api = ClientNode.CoreV1Api;
export type AppsV1Api = ClientNode.AppsV1Api;
export type BatchV1Api = ClientNode.BatchV1Api;
export type ApisApi = ClientNode.ApisApi;
export type AuthorizationV1Api = ClientNode.AuthorizationV1Api;
export type AuthenticationV1Api = ClientNode.AuthenticationV1Api;
export type CustomObjectsApi = ClientNode.CustomObjectsApi;
export type KubernetesObjectApi = ClientNode.KubernetesObjectApi;
export type VersionApi = ClientNode.VersionApi;
export type PortForward = ClientNode.PortForward;
