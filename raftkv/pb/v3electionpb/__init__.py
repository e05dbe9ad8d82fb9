"""etcd's election service (proto package ``v3electionpb``)."""
