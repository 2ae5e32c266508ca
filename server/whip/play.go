package whip

import "github.com/gin-gonic/gin"

type relay struct{}

func (h *Handler) play(c *gin.Context) { h.writeError(c, errNoStream) }
