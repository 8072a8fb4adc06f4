"""The catalog (SQLAlchemy models, repository, migrations), retention, the audit chain.

stdlib and sqlalchemy only: never `recorder` (the policy reaches it as plain settings).
"""
