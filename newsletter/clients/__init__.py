"""Client support: the final HTML's features against the vendored Can I Email dataset."""

from newsletter.clients.checker import ClientReport, Gap, check_clients
from newsletter.clients.dataset import FAMILIES, Family, families, load

__all__ = ["FAMILIES", "ClientReport", "Family", "Gap", "check_clients", "families", "load"]
