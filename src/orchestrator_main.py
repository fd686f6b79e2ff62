"""The seed's ``orchestrator_main`` module, provided by gadugi (see ``gadugi.compat``)."""

from gadugi.compat import OrchestrationConfig, OrchestratorCoordinator

__all__ = ["OrchestrationConfig", "OrchestratorCoordinator"]
