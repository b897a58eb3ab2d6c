"""The MLflow registry and what stewards do with it: registration, revocation (governance), the audit trail,
serving and locating the serving MoE."""
