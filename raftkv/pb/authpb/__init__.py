"""etcd's users, roles and permissions (proto package ``authpb``)."""
