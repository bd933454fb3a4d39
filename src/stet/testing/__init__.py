"""The store contract, for checking a store of your own (and stet's) with pytest.

Subclass :class:`StoreContract` in a test module and give it an ``open_store`` fixture:
a callable that returns a new handle on one fresh store (each call, the same store, as
another process would open it)::

    from stet.testing import StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        def open_store(self, tmp_path):
            return lambda: MyStore(tmp_path / "runs")

Every test then runs against that store. What a store declares in its
:class:`~stet.backends.Capabilities` decides which behaviour is checked (a store that
does not remove by function is checked to remove through :meth:`~stet.backends.Store.remove`).
Importing this module imports pytest; ``import stet`` does not import it.
"""

from __future__ import annotations

from ._contract import StoreContract

__all__ = ["StoreContract"]
