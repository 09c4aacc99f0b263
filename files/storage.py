"""S3 through django-storages, with presigned URLs that work from where clients are.

Inside a deployment the platform reaches S3 at a private address (compose: http://minio:9000, a
name only the compose network resolves); a client given a URL on that address cannot fetch it. A
SigV4 signature covers the host, so the URL cannot be rewritten afterwards: it is signed by a client
configured with AWS_S3_PUBLIC_ENDPOINT_URL instead. Presigning is computed locally: that client
never connects anywhere.
"""

import threading

from storages.backends import s3
from storages.utils import clean_name, setting


class S3Storage(s3.S3Storage):
    def __init__(self, **settings):
        super().__init__(**settings)
        self._public_clients = threading.local()  # boto3 clients are not shared between threads

    def get_default_settings(self):
        return {**super().get_default_settings(), "public_endpoint_url": setting("AWS_S3_PUBLIC_ENDPOINT_URL")}

    def _public_client(self):
        client = getattr(self._public_clients, "client", None)
        if client is None:
            client = self._create_session().client(
                "s3",
                region_name=self.region_name,
                use_ssl=self.use_ssl,
                endpoint_url=self.public_endpoint_url,
                config=self.client_config,
                verify=self.verify,
            )
            self._public_clients.client = client
        return client

    def url(self, name, parameters=None, expire=None, http_method=None):
        if not self.public_endpoint_url or not self.querystring_auth or self.custom_domain:
            return super().url(name, parameters, expire, http_method)
        params = {**(parameters or {}), "Bucket": self.bucket_name, "Key": self._normalize_name(clean_name(name))}
        return self._public_client().generate_presigned_url(
            "get_object",
            Params=params,
            ExpiresIn=self.querystring_expire if expire is None else expire,
            HttpMethod=http_method,
        )
