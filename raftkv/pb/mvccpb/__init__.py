"""etcd's stored records and watch events (proto package ``mvccpb``)."""
