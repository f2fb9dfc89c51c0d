"""The peerconnector plugin's Alembic revisions (owner ``peerconnector``)."""
