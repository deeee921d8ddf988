"""Ragline's AWS CDK app: one construct per capability, composed by a thin ``RaglineStack``.

Entry point: ``python -m infra_cdk.app`` (see ``cdk.json`` and ``infra_cdk/README.md``).
"""
