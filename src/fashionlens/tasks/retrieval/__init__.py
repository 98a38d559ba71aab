"""Street-to-shop and similar-item visual search: triplet-trained embeddings, catalogue indexes and their evaluation.

An :class:`Embedder` turns images into vectors: a pretrained backbone's pooled features, then an
:class:`~fashionlens.models.embedding.EmbeddingHead` (projection to ``dim`` dimensions, optional L2 normalisation).
The untrained baseline (:meth:`Embedder.untrained`) is the ImageNet features themselves. Training modes:

* ``features`` -- only the head trains, on cached frozen features (CPU-friendly: minutes on 8k images);
* ``finetune`` -- backbone (stem and first ``backbone.freeze`` stages frozen) and head train end to end on images
  (for GPUs).

Either way an image is cropped to its garment box when the manifest has one and resized to the network's square
input (224x224 for EfficientNet-Lite0), as the paper does with its bounding-box crops.

Both use pytorch-metric-learning's triplet margin loss on squared L2 distances, with the seed paper's
triplets (:mod:`fashionlens.tasks.retrieval.triplets`: anchor shop photo, positive street photo, 4 negatives,
easy:hard = 1:4; the negatives are user-shot photos of other pairs as in the paper, ``negatives: street``, or other
items' shop photos, ``negatives: shop``, this project's default) or PML's online miners. Which rows are positives is
the ``identity`` field: ``item_id`` (street-to-shop pairs) or a category such as ``articleType`` (similar-item search).

Cross-domain training (:func:`train_cross_domain_embedder`, ``RetrievalConfig.shared``, the shipped config
``retrieval_street2shop``) trains on real street photos too: street photos (Clothing Attributes) and catalogue photos
(Fashion Product Images) get classes in one label space through the street↔shop
:class:`~fashionlens.data.domains.DomainMapping` (:mod:`fashionlens.tasks.retrieval.shared_labels`), learnt
with PML proxy losses (ProxyAnchor by default) per label head, composed with mined triplets across the domains
(:mod:`fashionlens.tasks.retrieval.shared_space`).

Evaluation (:mod:`fashionlens.tasks.retrieval.evaluate`) ranks a gallery with a
:class:`~fashionlens.index.CatalogueIndex`. When a split has both domains, its street photos query its shop photos;
otherwise each item queries the others (never itself). Scores come from
:func:`fashionlens.metrics.retrieval_metrics`: ``recall@K`` is the HIT RATE (a query counts when at least one
relevant item is in its top K), which is also the paper's top-K accuracy ("correct shop image assigned" within
the first K); ``precision@K`` is the mean fraction of relevant items in the top K; ``mAP`` is over the ranked lists.

Catalogue indexes built, edited and searched with an embedder are the application layer's
(:mod:`fashionlens.catalogue`).
"""

from fashionlens.tasks.retrieval.attribute_search import (
    ATTRIBUTE_MODES,
    DEFAULT_WEIGHTS,
    AttributeSteering,
    AttributeWeights,
    QueryAttributes,
    attribute_search,
    steering_for_index,
)
from fashionlens.tasks.retrieval.config import MINERS, MODES, SHARED_LOSSES, RetrievalConfig, SharedSpaceConfig
from fashionlens.tasks.retrieval.evaluate import evaluate_similar_items, evaluate_street_to_shop
from fashionlens.tasks.retrieval.localised import (
    DEFAULT_VIEWS,
    FUSIONS,
    VIEWS,
    QueryCrop,
    default_localiser,
    fuse_embeddings,
    fuse_rankings,
    localised_search,
    plan_crops,
    plan_image_crops,
    search_views,
    view_images,
)
from fashionlens.tasks.retrieval.model import Embedder
from fashionlens.tasks.retrieval.ranking import rank_gallery, score_ranking
from fashionlens.tasks.retrieval.shared_labels import HEADS, SharedLabels, SharedSpaceSampler, shared_labels
from fashionlens.tasks.retrieval.shared_space import SharedSpaceObjective, train_cross_domain_embedder
from fashionlens.tasks.retrieval.street_eval import (
    SearchFn,
    StreetRelevance,
    catalogue_metadata,
    evaluate_street_search,
    index_search,
    street_queries,
)
from fashionlens.tasks.retrieval.train import TripletObjective, train_embedder
from fashionlens.tasks.retrieval.triplets import (
    NEGATIVE_DOMAINS,
    ClassBalancedSampler,
    PaperTripletSampler,
    TripletBatch,
)

__all__ = [
    "ATTRIBUTE_MODES", "DEFAULT_VIEWS", "DEFAULT_WEIGHTS", "FUSIONS", "HEADS", "MINERS", "MODES", "NEGATIVE_DOMAINS",
    "SHARED_LOSSES", "VIEWS", "AttributeSteering", "AttributeWeights", "ClassBalancedSampler", "Embedder",
    "PaperTripletSampler", "QueryAttributes", "QueryCrop", "RetrievalConfig", "SearchFn", "SharedLabels",
    "SharedSpaceConfig", "SharedSpaceObjective", "SharedSpaceSampler", "StreetRelevance", "TripletBatch",
    "TripletObjective", "attribute_search", "catalogue_metadata", "default_localiser", "evaluate_similar_items",
    "evaluate_street_search", "evaluate_street_to_shop", "fuse_embeddings", "fuse_rankings", "index_search",
    "localised_search", "plan_crops", "plan_image_crops", "rank_gallery", "score_ranking", "search_views",
    "shared_labels", "steering_for_index", "street_queries", "train_cross_domain_embedder", "train_embedder",
    "view_images",
]
