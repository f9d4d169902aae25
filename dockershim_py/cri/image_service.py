"""CRI ImageService RPCs."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from ..api import api_pb2 as api
from ..image import ImageService
from .handlers import Adapter
from .list_streams import batches


class ImageServiceAdapter(Adapter):
    SERVICE = "ImageService"
    def __init__(self, images: ImageService) -> None:
        self._images = images

    def ListImages(self, request: api.ListImagesRequest, context: grpc.ServicerContext) -> api.ListImagesResponse:
        return api.ListImagesResponse(images=self._images.list_images(request.filter.image.image))

    def StreamImages(
        self, request: api.StreamImagesRequest, context: grpc.ServicerContext
    ) -> Iterator[api.StreamImagesResponse]:
        for batch in batches(self._images.list_images(request.filter.image.image)):
            yield api.StreamImagesResponse(images=batch)

    def ImageStatus(self, request: api.ImageStatusRequest, context: grpc.ServicerContext) -> api.ImageStatusResponse:
        image, info = self._images.image_status(request.image.image, request.verbose)
        return api.ImageStatusResponse(image=image, info=info)

    def PullImage(self, request: api.PullImageRequest, context: grpc.ServicerContext) -> api.PullImageResponse:
        auth = request.auth if request.HasField("auth") else None
        image_ref = self._images.pull_image(request.image.image, auth, context.add_callback)
        return api.PullImageResponse(image_ref=image_ref)

    def RemoveImage(self, request: api.RemoveImageRequest, context: grpc.ServicerContext) -> api.RemoveImageResponse:
        self._images.remove_image(request.image.image)
        return api.RemoveImageResponse()

    def ImageFsInfo(self, request: api.ImageFsInfoRequest, context: grpc.ServicerContext) -> api.ImageFsInfoResponse:
        image_filesystems, container_filesystems = self._images.image_fs_info()
        return api.ImageFsInfoResponse(
            image_filesystems=image_filesystems, container_filesystems=container_filesystems
        )
