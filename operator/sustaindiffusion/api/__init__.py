"""The SustainSearch API shared by the operator, the local runner and the worker.

Pure data models only: this package never imports kopf, the Kubernetes client or the ML stack.
"""
