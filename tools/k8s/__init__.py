"""The Kubernetes manifests under deploy/k8s/, rendered from the topology.

`python -m tools.k8s` writes the kustomize base (a Deployment per
server, worker and Envoy; a headless Service per gRPC server; PDBs; HPAs for the
scaled consumers; the migration Job; NetworkPolicies; the ExternalName Services
of the databases) and the dev and prod overlays, and copies the compose Envoy
config, edge.lua and the descriptor set beside the base for its
configMapGenerator (kustomize loads no file outside its root). A unit test fails
when any file differs from what `render()` returns, so the manifests follow
services/topology.py the way docker-compose.yml does.

Every Service has its process's name: Envoy's compose config dials `order:7051`
and the namespace's DNS answers the same name, so the config is reused as is.
The gRPC servers' Services are headless: Envoy's STRICT_DNS clusters resolve
every ready pod and balance (and health-check) per pod, not per connection.
"""
