"""etcd's v3 client API (proto package ``etcdserverpb``): KV, Watch, Lease, Cluster, and more."""
