"""etcd's lock service (proto package ``v3lockpb``)."""
