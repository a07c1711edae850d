"""Principles: the model, proposing one from feedback, the rule reader, near-duplicates, ICAI."""

from policies.principles.model import (GLOBAL_DOMAIN, Evidence, FeedbackInput, Principle, ProposalFailure,
                                       principle_fields)
from policies.principles.propose import ProposalAnswer, proposal_messages, propose_principle
from policies.principles.similarity import (PrincipleCluster, cluster_principles, cluster_texts, nearest,
                                            nearest_by_meaning, same_scope_by_meaning, similarity_matrix)

__all__ = ["GLOBAL_DOMAIN", "Evidence", "FeedbackInput", "Principle", "ProposalFailure", "principle_fields",
           "ProposalAnswer", "proposal_messages", "propose_principle", "PrincipleCluster", "cluster_principles",
           "cluster_texts", "nearest", "nearest_by_meaning", "same_scope_by_meaning", "similarity_matrix"]
