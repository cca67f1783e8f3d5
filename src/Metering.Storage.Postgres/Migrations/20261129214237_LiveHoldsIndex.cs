using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace Metering.Storage.Postgres.Migrations
{
    /// <inheritdoc />
    public partial class LiveHoldsIndex : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.CreateIndex(
                name: "IX_holds_live_subject_id",
                table: "holds",
                column: "subject_id",
                filter: "ended_at IS NULL");
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropIndex(
                name: "IX_holds_live_subject_id",
                table: "holds");
        }
    }
}
