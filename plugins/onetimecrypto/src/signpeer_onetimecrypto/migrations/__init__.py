"""The onetimecrypto plugin's Alembic revisions (owner ``onetimecrypto``)."""
