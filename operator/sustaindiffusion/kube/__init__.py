"""A search's objects in a Kubernetes cluster, without kopf: deterministic names and labels, pure
builders of task ConfigMaps and Indexed Jobs, the pure classification of a generation's Job and
pods, the ConfigMap archive, and the Kubernetes executor of the generation loop.

Used by the operator and by reports read from a cluster; never imports kopf or the ML stack.
"""
