"""What the identity service's workers are handed, built once per process:
its settings and the identity-proofing provider the settings name."""
from __future__ import annotations

from nameko.extensions import DependencyProvider

from services.identity import face_pool
from services.identity.proofing import IdentityProofing
from services.identity.settings import IdentitySettings


def build_proofing(settings: IdentitySettings, encode, threshold: float) -> IdentityProofing:
    """The provider ``PROOFING.PROVIDER`` names. ``encode(image, field)`` turns an
    image into a face encoding (bytes) in the face worker pool."""
    name = settings.proofing.provider
    if name == "tencent_faceid":
        from services.identity.proofing.tencent import TencentFaceId, TencentFaceIdSettings

        return TencentFaceId(TencentFaceIdSettings.from_config(settings.proofing.tencent))
    if name == "self_declared":
        from services.identity.proofing.self_declared import SelfDeclaredProofing

        return SelfDeclaredProofing(encode, threshold)
    from services.identity.proofing.registry import RegistryProofing

    return RegistryProofing(settings.proofing.registry_file, encode, threshold)


class SettingsProvider(DependencyProvider):
    """The frozen :class:`IdentitySettings`, read at start (a bad value stops the service)."""

    def setup(self) -> None:
        self.settings = IdentitySettings.from_config(self.container.config)

    def get_dependency(self, worker_ctx) -> IdentitySettings:
        return self.settings


class ProofingProvider(DependencyProvider):
    """The process's identity-proofing provider; its face encodings run in the
    service's face pool (:class:`~services.identity.face_pool.FacePool`)."""

    def setup(self) -> None:
        settings = IdentitySettings.from_config(self.container.config)
        pool = next(dep for dep in self.container.dependencies if isinstance(dep, face_pool.FacePool))

        def encode(image: bytes, field: str) -> bytes:
            return pool.run(face_pool.encode_image, image, field)

        self.provider = build_proofing(settings, encode,
                                       face_pool.face_settings_from(self.container.config)[0].threshold)

    def get_dependency(self, worker_ctx) -> IdentityProofing:
        return self.provider
