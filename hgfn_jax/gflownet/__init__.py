"""GFlowNet machinery shared by every environment: the environment contract, one `lax.scan` rollout,
trajectory balance, and masked-categorical helpers."""
