"""Marketing: logged campaign feedback, offer policies, off-policy evaluation."""

from .logged import LoggedFeedback

__all__ = ["LoggedFeedback"]
