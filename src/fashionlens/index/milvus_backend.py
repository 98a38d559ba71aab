from fashionlens.index.catalogue import CatalogueIndex


class MilvusCatalogueIndex(CatalogueIndex):
    backend = "milvus"
