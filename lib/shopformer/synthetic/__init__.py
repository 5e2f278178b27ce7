"""The synthetic shop: seeded users, catalog and REES46-format events (docs/synthetic_shop.md)."""
